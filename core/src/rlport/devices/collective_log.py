"""What a collectives library's debug log says about the transport it chose.

NCCL and libraries that share its interface (they read the same ``<PREFIX>_DEBUG`` variables) write
one line per channel at ``<PREFIX>_DEBUG=INFO`` naming the transport (``via P2P/IPC``, ``via SHM``,
``via NET/IB/0``) and the network they load (``Using network IB``). A device plugin asks for that log
in a file when the user has not configured debugging, and its preflight reads it back after a first
collective. The prefix is the plugin's; nothing here knows a vendor.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path

_VIA = re.compile(r"\bvia (\S+)")
_NETWORK = re.compile(r"\bUsing network (\S+)")


def debug_env(prefix: str, env: Mapping[str, str] | None = None, folder: str | None = None) -> dict[str, str]:
    """The variables that send ``prefix``'s INFO log of start-up and network choice to a file
    (``%h``/``%p`` become host and pid), or nothing when the user set any ``<prefix>_DEBUG*``
    variable: their debugging set-up wins."""
    env = os.environ if env is None else env
    if any(key.startswith(f"{prefix}_DEBUG") for key in env):
        return {}
    path = Path(folder or tempfile.gettempdir()) / f"rlport-{prefix.lower()}.%h.%p.log"
    return {
        f"{prefix}_DEBUG": "INFO",
        f"{prefix}_DEBUG_SUBSYS": "INIT,NET",
        f"{prefix}_DEBUG_FILE": str(path),
    }


def log_path(prefix: str, env: Mapping[str, str] | None = None, pid: int | None = None) -> Path | None:
    """This process's debug log file, or ``None`` when none was asked for."""
    env = os.environ if env is None else env
    pattern = env.get(f"{prefix}_DEBUG_FILE")
    if not pattern:
        return None
    return Path(
        pattern.replace("%h", socket.gethostname()).replace("%p", str(os.getpid() if pid is None else pid))
    )


def transports(text: str) -> tuple[list[str], list[str]]:
    """The distinct transports (``P2P/IPC``, ``SHM/direct/direct``, ``NET/IB/0``) and networks
    (``IB``, ``Socket``) a debug log names, in order of first appearance."""
    via = list(dict.fromkeys(m.group(1) for m in _VIA.finditer(text)))
    networks = list(dict.fromkeys(m.group(1) for m in _NETWORK.finditer(text)))
    return via, networks


def describe(prefix: str, env: Mapping[str, str] | None = None, pid: int | None = None) -> str:
    """One line on the transport this process uses, from its debug log where there is one."""
    path = log_path(prefix, env, pid)
    if path is None:
        return (
            f"transport not logged ({prefix}_DEBUG is configured by the user; "
            f"{prefix}_DEBUG=INFO {prefix}_DEBUG_SUBSYS=INIT,NET shows it)"
        )
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"transport not logged (no {path})"
    via, networks = transports(text)
    parts = []
    if via:
        parts.append("via " + ", ".join(via))
    if networks:
        parts.append("network " + ", ".join(networks))
    return "; ".join(parts) or f"no transport lines in {path} (a single rank needs none)"
