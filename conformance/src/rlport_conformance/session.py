"""The conformance session inside the pytest process: the runtime of the plugin under test, its
declared capabilities, the plan, and the facts a report records about plugin and environment."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlport_conformance
from rlport_conformance import plan as plan_mod
from rlport_conformance.recorder import EventLog, PerfLog


def suite_info() -> dict[str, Any]:
    """Name, version and revision of this suite: the git commit of its source tree when it is a
    checkout (with ``+dirty`` when its files differ from that commit), else the package version."""
    here = Path(rlport_conformance.__file__).resolve().parent
    revision = f"package-{rlport_conformance.__version__}"
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0 and head.stdout.strip():
            revision = head.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--", "."],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if dirty.returncode == 0 and dirty.stdout.strip():
                revision += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "name": rlport_conformance.SUITE_NAME,
        "version": rlport_conformance.__version__,
        "revision": revision,
    }


#: Set by the runner: the plugin the run is about (a fabric plugin runs on top of a device plugin).
UNDER_TEST = "RLPORT_CONFORMANCE_PLUGIN"


def plugin_info(rt: Any) -> dict[str, Any]:
    """The plugin under test (``RLPORT_CONFORMANCE_PLUGIN``, default the device plugin), which must be
    active, and the device plugin it ran with."""
    from rlport.errors import SelectionError

    wanted = os.environ.get(UNDER_TEST) or rt.selection.device.name
    record = next((r for r in rt.selection.active if r.name == wanted), None)
    if record is None:
        raise SelectionError(
            f"plugin {wanted!r} is not active in this process (active: {', '.join(rt.active_plugins)})",
            f"run `rlport plugins` to see why {wanted!r} was not selected",
        )
    from rlport_conformance.signing import distribution_files

    return {
        "name": record.name,
        "distribution": record.distribution,
        "version": record.version,
        "files": distribution_files(record.distribution),
        "kind": record.kind,
        "priority": record.priority,
        "device_plugin": rt.selection.device.name,
        "selection": rt.selection.reason,
        "fabrics": [
            {"name": r.name, "distribution": r.distribution, "version": r.version}
            for r in rt.selection.fabrics
        ],
        "rlport": _version("rlport"),
    }


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(rt: Any, profile: plan_mod.Profile) -> dict[str, Any]:
    import torch

    info = rt.device
    return {
        "device": info.names[0] if info.names else info.device_type,
        "device_type": info.device_type,
        "device_count": info.count,
        "driver": info.driver_version,
        "runtime": info.runtime_version,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "world_size": max(profile.world_sizes),
        "world_sizes": list(profile.world_sizes),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "collectives_backend": rt.collectives_backend,
    }


@dataclass
class ConformanceSession:
    """Everything the cases share: created once per pytest process by the plugin."""

    rt: Any
    declared: dict[str, Any]
    cases: list[plan_mod.PlannedCase]
    log: EventLog
    perf: PerfLog
    case_timeout: float
    profile: plan_mod.Profile = field(default_factory=plan_mod.Profile)
    run_perf: bool = True
    exclude: set[str] = field(default_factory=set)
    shared: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        log: EventLog,
        case_timeout: float,
        run_perf: bool,
        exclude: set[str],
        world_size: int | None = None,
    ) -> ConformanceSession:
        import rlport

        rt = rlport.init()
        declared = plan_mod.capabilities_to_dict(rt.capabilities())
        profile = plan_mod.profile_for(rt.device.device_type, rt.device.count, world_size)
        cases = plan_mod.plan(declared, profile)
        session = cls(rt, declared, cases, log, PerfLog(log), case_timeout, profile, run_perf, exclude)
        log.write(
            {
                "event": "session",
                "pid": os.getpid(),
                "suite": suite_info(),
                "plugin": plugin_info(rt),
                "environment": environment(rt, profile),
                "profile": profile.to_json(),
                "capabilities": declared,
                "plan": [c.id for c in cases],
            }
        )
        return session

    def of_kind(self, kind: str) -> list[plan_mod.PlannedCase]:
        return [c for c in self.cases if c.kind == kind]
