"""The preflight that proves NCCL runs over EFA: a small all_reduce with NCCL's INIT/NET log going to
a per-process file (``NCCL_DEBUG_FILE``, set with ``NCCL_DEBUG=INFO`` and
``NCCL_DEBUG_SUBSYS=INIT,NET`` by this plugin's ``rlport_collectives_env`` before the group starts),
then :mod:`rlport_efa.nccl_log` reads what NCCL chose.

Capture and parsing are separate: :func:`capture` takes the collective as a callable, so tests drive
it with a fake that writes the log as NCCL would."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from packaging.version import Version

from rlport.types import PreflightResult
from rlport_efa import nccl_log


def debug_files(template: str, pid: int) -> list[Path]:
    """This process's NCCL debug files for ``template`` (``%h`` host, ``%p`` pid), newest last."""
    pattern = Path(template.replace("%h", "*").replace("%p", str(pid)))
    return sorted(pattern.parent.glob(pattern.name), key=lambda p: p.stat().st_mtime)


def logging_problem(env: Mapping[str, str]) -> str | None:
    """Why NCCL would not write the lines the check needs, or None."""
    level = env.get("NCCL_DEBUG", "").upper()
    if level not in ("INFO", "TRACE"):
        return f"NCCL_DEBUG={env.get('NCCL_DEBUG', '')!r} (needs INFO)"
    subsys = env.get("NCCL_DEBUG_SUBSYS", "INIT,BOOTSTRAP,ENV").upper()
    names = set(subsys.lstrip("^").split(","))
    shown = {"INIT", "NET"} - names if subsys.startswith("^") else {"INIT", "NET"} & names
    if "ALL" not in names and shown != {"INIT", "NET"}:
        return f"NCCL_DEBUG_SUBSYS={env.get('NCCL_DEBUG_SUBSYS')!r} (needs INIT,NET)"
    if not env.get("NCCL_DEBUG_FILE"):
        return "NCCL_DEBUG_FILE is unset (the log would go to stderr, where rlport cannot read it)"
    return None


def capture(
    run_collective: Callable[[], None], env: Mapping[str, str], pid: int | None = None
) -> tuple[str, str]:
    """Run the collective, then return (this process's NCCL debug log, the file it came from)."""
    run_collective()
    template = env["NCCL_DEBUG_FILE"]
    files = debug_files(template, os.getpid() if pid is None else pid)
    if not files:
        return "", f"{template} (no file written)"
    return files[-1].read_text(errors="replace"), str(files[-1])


def check(
    run_collective: Callable[[], None],
    env: Mapping[str, str],
    *,
    plugin_dir: str | None,
    expected_version: Version | None,
    pid: int | None = None,
) -> PreflightResult:
    """Capture and judge: passes only on a log that shows aws-ofi-nccl on the efa provider."""
    problem = logging_problem(env)
    if problem:
        return PreflightResult(
            nccl_log.CHECK,
            False,
            f"cannot see which network NCCL uses: {problem}",
            "unset NCCL_DEBUG, NCCL_DEBUG_SUBSYS and NCCL_DEBUG_FILE (rlport sets them for this check)",
        )
    text, source = capture(run_collective, env, pid)
    return nccl_log.verdict(
        nccl_log.parse(text), source=source, plugin_dir=plugin_dir, expected_version=expected_version
    )


def all_reduce(group: Any) -> None:
    """A small all_reduce on this rank's device, completed (NCCL creates its communicator here)."""
    import torch
    import torch.distributed as dist

    import rlport

    rt = rlport.current()
    tensor = torch.ones(64, device=rt.torch_device())
    dist.all_reduce(tensor, group=group)
    if rt.device.device_module:
        importlib.import_module(rt.device.device_module).synchronize()
