"""Rich consoles for rlport's output: full width in a terminal, and wide enough not to fold lines
when piped into a log (rich assumes 80 columns there)."""

from __future__ import annotations

from typing import IO, Any

from rich.console import Console

LOG_WIDTH = 160


def make_console(*, stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    console = Console(stderr=stderr, file=file, **kwargs)
    if not console.is_terminal and "width" not in kwargs:
        console = Console(stderr=stderr, file=file, width=LOG_WIDTH, **kwargs)
    return console
