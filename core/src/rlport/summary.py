"""The startup summary: which plugin serves which hook, why it was chosen, what is broken, and
every patch. Printed once per run by :func:`print_once` (rank 0, stderr), and by ``rlport info``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from rlport import settings as settings_mod
from rlport._version import HOOK_API_VERSION, __version__
from rlport.console import make_console

if TYPE_CHECKING:
    from rlport.runtime import Runtime

AREAS: dict[str, tuple[str, ...]] = {
    "platform": ("rlport_device_info", "rlport_worker_env", "rlport_supported_stack", "rlport_doctor"),
    "attention": ("rlport_attention_backend",),
    "collectives": ("rlport_collectives_backend", "rlport_collectives_env", "rlport_collectives_preflight"),
    "memory": ("rlport_memory_backend", "rlport_allocator_settings"),
    "rollout": ("rlport_rollout_engines", "rlport_engine_args", "rlport_weight_transport"),
    "patches": ("rlport_patches",),
    "conformance": ("rlport_capabilities",),
    "training": ("rlport_optimizer", "rlport_before_model_build", "rlport_unsupported_strategies"),
}


def collect(runtime: Runtime) -> dict[str, Any]:
    """The summary as JSON-able data (``rlport info --json``, ``RLPORT_SUMMARY=json``), read
    afresh at each call: ``patches`` holds every patch's state now, pending ones decided since
    ``rlport.init()`` included."""
    from rlport.patches import get_manager

    device = runtime.selection.device
    # the platform's own answers first, so that the hooks table below sees them resolved
    resolved = {
        "collectives_backend": runtime.collectives_backend,
        "memory_backend": f"{runtime.memory.name} ({runtime.resolutions.get('rlport_memory_backend')})",
        "rollout_engines": {name: plugin for name, (_, plugin) in runtime.rollout_engines().items()},
        "allocator": {
            phase: (s.env if (s := runtime.allocator_settings(phase)) else {})
            for phase in ("rollout", "training")
        },
        "allocator_overridden_by_user": dict(runtime.allocator_overridden),
        "hub_kernels": runtime.hub_kernels.to_json(),
    }
    hooks = []
    for area, names in AREAS.items():
        for name in names:
            chain = runtime.implementers(name)
            if chain:
                # A first-answer hook not asked yet in this process (attention is asked per shape,
                # the optimizer in each training process) names the plugin asked first, marked as
                # not yet resolved: that plugin may still defer to the next one.
                served = runtime.resolutions.get(name)
                pending = served is None and runtime.first_answer_wins(name)
                hooks.append(
                    {
                        "area": area,
                        "hook": name,
                        "served_by": served or chain[0],
                        "resolved": not pending,
                        "chain": chain,
                    }
                )
    return {
        "rlport": {"version": __version__, "hook_api": HOOK_API_VERSION},
        "platform": {
            "plugin": device.name,
            "distribution": device.distribution,
            "version": device.version,
            "reason": runtime.selection.reason,
            "device": dataclasses.asdict(runtime.device),
        },
        "fabrics": [
            {"name": r.name, "distribution": r.distribution, "version": r.version, "reason": r.reason}
            for r in runtime.selection.fabrics
        ],
        "resolved": resolved,
        "hooks": hooks,
        "inactive_plugins": [r.to_json() for r in runtime.records if r.status != "active"],
        "warnings": list(runtime.selection.warnings),
        "patches": get_manager().to_json(),
    }


def render(data: dict[str, Any]) -> Group:
    """Rich renderables for :func:`collect`'s data."""
    core, platform = data["rlport"], data["platform"]
    dev = platform["device"]
    head = Text.assemble(
        ("rlport ", "bold"),
        f"{core['version']} (hook API {core['hook_api']})  ",
        ("device plugin: ", "bold"),
        f"{platform['plugin']} ({platform['distribution']} {platform['version']})",
    )
    lines = [
        head,
        Text(f"  chosen because: {platform['reason']}"),
        Text(
            f"  device: {dev['device_type']} x{dev['count']} {', '.join(dev['names'])}; "
            f"collectives {data['resolved']['collectives_backend']}; "
            f"memory {data['resolved']['memory_backend']}; runtime {dev['runtime_version']}"
        ),
        Text(
            "  allocator: "
            + (
                "; ".join(
                    f"{phase} {' '.join(f'{k}={v}' for k, v in env.items())}"
                    for phase, env in data["resolved"]["allocator"].items()
                    if env
                )
                or "device defaults"
            )
        ),
        Text(
            "  hub kernels: "
            + ("on" if data["resolved"]["hub_kernels"]["on"] else "off")
            + f" ({data['resolved']['hub_kernels']['reason']})"
        ),
        Text(
            "  fabric plugins: "
            + (
                ", ".join(f"{f['name']} ({f['distribution']} {f['version']})" for f in data["fabrics"])
                or "none"
            )
        ),
    ]
    hooks = Table(title="hooks", title_justify="left", box=None, pad_edge=False)
    for column in ("area", "hook", "served by", "then"):
        hooks.add_column(column)
    for row in data["hooks"]:
        rest = [p for p in row["chain"] if p != row["served_by"]]
        served = row["served_by"] if row.get("resolved", True) else f"{row['served_by']} (asked first)"
        hooks.add_row(*(Text(c) for c in (row["area"], row["hook"], served, " -> ".join(rest))))
    parts: list[Any] = [*lines, hooks]
    swapped = data["resolved"]["hub_kernels"]["layers"]
    if data["resolved"]["hub_kernels"]["on"] and swapped:
        kernels = Table(
            title="hub kernels (layers transformers swaps when a model has them; code fetched from the Hub)",
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for column in ("layer", "kernel from"):
            kernels.add_column(column, overflow="fold")
        for layer, source in swapped:
            kernels.add_row(Text(layer), Text(source))
        parts.append(kernels)
    if data["inactive_plugins"]:
        other = Table(title="other installed plugins", title_justify="left", box=None, pad_edge=False)
        for column in ("plugin", "status", "reason", "fix"):
            other.add_column(column, overflow="fold")
        for r in data["inactive_plugins"]:
            style = "red" if r["status"] == "broken" else None
            other.add_row(  # plugin text is shown verbatim, never read as markup
                Text(f"{r['name']} ({r['distribution']} {r['version']})"),
                Text(r["status"]),
                Text(r["reason"]),
                Text(r["fix"]),
                style=style,
            )
        parts.append(other)
    from rlport.patches import get_manager, render_table

    parts.append(render_table(get_manager().records))
    return Group(*parts)


def _group() -> Any:
    """torch.distributed when this process is in an initialised group (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def _rank() -> int:
    dist = _group()
    return int(dist.get_rank()) if dist is not None else int(os.environ.get("RANK", "0") or 0)


def print_once(runtime: Runtime, file: Any = None) -> bool:
    """Print the summary unless disabled, already printed by this run, or not rank 0."""
    mode = runtime.settings.summary
    if mode == "0" or os.environ.get(settings_mod.SUMMARY_SHOWN) or _rank() != 0:
        return False
    file = file or sys.stderr
    data = collect(runtime)
    if mode == "json":
        file.write(json.dumps(data, default=str) + "\n")
    else:
        make_console(file=file).print(render(data))
    settings_mod.set_env(settings_mod.SUMMARY_SHOWN, str(os.getpid()))
    return True


def follow_patches(runtime: Runtime, file: Any = None) -> None:
    """Report each later decision of pending patches (applied, or failed and rolled back, when
    their module is imported) as one line, by the summary's rules: on rank 0 only, on stderr (or
    ``file``), silent with ``RLPORT_SUMMARY=0``, a JSON line (the event and every patch's state
    now) with ``RLPORT_SUMMARY=json``. The process that printed the summary reports, and so does
    a worker of rank 0 in a distributed group (``RANK`` set, or torch.distributed initialised), so
    a model loaded there is reported; other spawned workers stay quiet, as for the summary."""
    from rlport.patches import PatchEvent, event_line, get_manager

    mode = runtime.settings.summary

    def report(event: PatchEvent) -> None:
        printed_here = os.environ.get(settings_mod.SUMMARY_SHOWN) == str(os.getpid())
        if mode == "0" or _rank() != 0 or not (printed_here or _group() is not None or "RANK" in os.environ):
            return
        out = file or sys.stderr
        if mode == "json":
            out.write(json.dumps(event.to_dict(), default=str) + "\n")
        else:
            make_console(file=out).print(event_line(event), soft_wrap=True)

    get_manager().set_reporter(report)


__all__ = ["AREAS", "collect", "follow_patches", "print_once", "render"]
