"""The process's runtime, made once: :func:`init` discovers and validates plugins, selects the
device plugin and fabric plugins, builds the :class:`~rlport.runtime.Runtime`, applies their declared
patches, exports the choice to the environment for worker processes, and prints the startup summary.
It sits above the runtime, the patch manager and the summary, which never import it.
"""

from __future__ import annotations

import os
import threading

from rlport import settings as settings_mod
from rlport.discovery import PluginRecord, discover
from rlport.runtime import Runtime
from rlport.selection import select
from rlport.settings import Settings

set_env = settings_mod.set_env


_lock = threading.RLock()
_runtime: Runtime | None = None
_pid: int | None = None


def _export(runtime: Runtime) -> None:
    """Make worker processes resolve the same way (they inherit the environment)."""
    set_env(settings_mod.DEVICE, runtime.device_plugin)
    set_env(settings_mod.FABRICS, ",".join(runtime.fabric_plugins))
    for key, value in runtime.worker_env.items():
        if key not in os.environ:
            set_env(key, value)
    from rlport.devices.hub_kernels import VARIABLE

    if VARIABLE not in os.environ:  # the device plugin's decision, unless the user made their own
        set_env(VARIABLE, "1" if runtime.hub_kernels.on else "0")


def build(env: dict[str, str] | None = None) -> tuple[Settings, list[PluginRecord]]:
    """Read settings and discover plugins without selecting (used by ``rlport plugins``)."""
    settings = settings_mod.read(env)
    return settings, discover(settings)


def init() -> Runtime:
    """Create the process's Runtime once (per pid) and print the startup summary."""
    global _runtime, _pid
    with _lock:
        if _runtime is not None and _pid == os.getpid():
            return _runtime
        settings, records = build()
        selection = select(records, settings)
        runtime = Runtime(settings, records, selection)
        from rlport.patches import get_manager

        get_manager().apply_from_plugins(runtime.pm, runtime.active_plugins, strict=settings.strict)
        _runtime, _pid = runtime, os.getpid()
        _export(runtime)
        from rlport.attention import autoregister

        autoregister.install()  # attn_implementation="rlport", once transformers' models are imported
        from rlport.summary import follow_patches, print_once

        print_once(runtime)
        follow_patches(runtime)
        return runtime


def reset() -> None:
    """Forget the process's Runtime and revert its patches (for tests)."""
    global _runtime, _pid
    with _lock:
        if _runtime is not None:
            from rlport.patches import revert_all

            revert_all()
        settings_mod.restore_env()
        from rlport.attention import autoregister

        autoregister.remove()  # and the backends it cached came from the runtime being forgotten
        _runtime, _pid = None, None
