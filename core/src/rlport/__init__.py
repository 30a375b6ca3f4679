"""rlport: one LLM RL post-training stack on any accelerator.

``import rlport`` is light: it imports neither torch nor any plugin. :func:`init` does the work,
once per process: it discovers plugins, selects the device plugin, activates it with the fabric
plugins, applies declared patches, makes ``attn_implementation="rlport"`` available to transformers
(when, and only when, transformers' models are imported), and prints the startup summary on rank 0.
Using it from your own code: docs/library.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlport._version import HOOK_API_VERSION, __version__
from rlport.hookspecs import hookimpl

if TYPE_CHECKING:
    from rlport.runtime import Runtime

__all__ = ["HOOK_API_VERSION", "__version__", "current", "hookimpl", "init"]


def init() -> Runtime:
    """Select and activate plugins and print the startup summary once; return the Runtime.

    Idempotent: later calls in the same process return the same Runtime.
    """
    from rlport.bootstrap import init as _init

    return _init()


def current() -> Runtime:
    """The process's Runtime, initialising it on first use."""
    from rlport.bootstrap import init as _init

    return _init()
