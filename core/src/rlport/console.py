"""Rich consoles for rlport's output: full width in a terminal, and wide enough not to fold lines
when piped into a log (rich assumes 80 columns there).

Text that comes from outside rlport (plugin reasons, paths, user values, exception messages) is
never parsed as rich markup: build it with :class:`rich.text.Text`, or print it through
:func:`print_error`.
"""

from __future__ import annotations

from typing import IO, Any

from rich.console import Console
from rich.text import Text

LOG_WIDTH = 160


def make_console(*, stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    console = Console(stderr=stderr, file=file, **kwargs)
    if not console.is_terminal and "width" not in kwargs:
        console = Console(stderr=stderr, file=file, width=LOG_WIDTH, **kwargs)
    return console


def print_error(console: Console, message: str, fix: str = "", *, label: str = "error") -> None:
    """The one way every rlport command prints a failure: ``label: message`` then ``  fix: ...``,
    both verbatim (no markup, no highlighting)."""
    console.print(Text.assemble((f"{label}:", "bold red"), " ", message), highlight=False)
    if fix:
        console.print(Text.assemble("  ", ("fix:", "bold"), " ", fix), highlight=False)
