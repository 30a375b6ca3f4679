"""Choosing the active plugins: probe device and fabric plugins, pick one device, keep every fabric
that tunes the device's collectives backend.

Rules (architecture.md, "Plugins and selection"): the highest available priority wins; a tie is an
error naming both; ``RLPORT_DEVICE`` chooses explicitly and fails loudly; a plugin whose probe raises is
broken, the next best is used with a warning, and ``RLPORT_STRICT=1`` makes any broken plugin fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rlport.discovery import PluginRecord
from rlport.errors import PluginError, SelectionError
from rlport.settings import DEVICE, FABRICS, PLUGINS, STRICT, Settings, set_env
from rlport.types import Finding, ProbeResult


@dataclass
class Selection:
    device: PluginRecord
    fabrics: list[PluginRecord]
    reason: str
    warnings: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[PluginRecord]:
        return [self.device, *self.fabrics]


def probe(record: PluginRecord) -> None:
    """Call the plugin's own probe (never broadcast) and record the answer in ``record``."""
    fn = getattr(record.obj, "rlport_probe", None)
    if fn is None:
        if record.kind == "device":
            record.mark_broken(
                f"device plugin {record.label} implements no rlport_probe",
                "a device plugin must say whether it can run: add an @rlport.hookimpl rlport_probe()",
            )
        else:  # a fabric plugin without a probe is always available
            record.reason = record.reason or "no probe: always available"
        return
    try:
        result = fn()
    except Exception as exc:
        record.mark_broken(
            f"probe of plugin {record.label} raised {type(exc).__name__}: {exc}",
            f"report it to the maintainers of {record.distribution or record.name}; to run without it: "
            f"export {PLUGINS}= (built-ins only) or pip uninstall {record.distribution or record.name}",
            exc,
        )
        return
    if not isinstance(result, ProbeResult):
        record.mark_broken(
            f"probe of plugin {record.label} returned {type(result).__name__}; expected ProbeResult",
            f"report it to the maintainers of {record.distribution or record.name}",
        )
        return
    bad = [f for f in result.findings if not isinstance(f, Finding)]
    if bad or not all(isinstance(k, str) and isinstance(v, str) for k, v in result.env.items()):
        record.mark_broken(
            f"probe of plugin {record.label} returned env {result.env!r} / findings {list(result.findings)!r}; "
            "expected str -> str variables and rlport.types.Finding values",
            f"report it to the maintainers of {record.distribution or record.name}",
        )
        return
    record.priority = result.priority
    record.reason = result.reason
    record.status = "available" if result.available else "unavailable"
    record.env = dict(result.env)
    record.findings = list(result.findings)
    for key, value in result.env.items():  # before anything imports torch; the user's value wins
        if key not in os.environ:
            set_env(key, value)


def _named(records: list[PluginRecord], kind: str) -> dict[str, PluginRecord]:
    return {
        r.name: r for r in records if r.kind == kind or (r.status in ("broken", "disabled") and not r.kind)
    }


def _explicit(name: str, records: list[PluginRecord], kind: str, var: str) -> PluginRecord:
    candidates = _named(records, kind)
    record = candidates.get(name)
    installed = ", ".join(sorted(r.name for r in records if r.kind == kind)) or "none"
    if record is None:
        raise SelectionError(
            f"{var}={name!r} names no installed {kind} plugin (installed: {installed})",
            f"pip install rlport-{name}   or   export {var}=<one of: {installed}>",
        )
    if record.status == "disabled":
        raise SelectionError(f"{var}={name!r} names a plugin that is {record.reason}", record.fix)
    if record.status == "broken":
        raise SelectionError(f"{var}={name!r} names a broken plugin: {record.reason}", record.fix)
    if record.status == "unavailable":
        raise SelectionError(
            f"{var}={name!r} names a plugin that is unavailable here: {record.reason}",
            f"unset {var} to select automatically, or fix the cause above",
        )
    return record


def select(records: list[PluginRecord], settings: Settings) -> Selection:
    """Probe and choose. Marks the chosen records ``active``; raises on tie, explicit-choice
    failure, or (strict mode) any broken plugin."""
    for record in records:
        if record.status == "available" and record.obj is not None:
            probe(record)
    warnings = [f"{r.reason}\n  fix: {r.fix}" for r in records if r.status == "broken"]
    if settings.strict and warnings:
        broken = [r for r in records if r.status == "broken"]
        raise PluginError(
            f"{STRICT}=1 and {len(broken)} plugin(s) are broken: " + "; ".join(r.reason for r in broken),
            broken[0].fix + f"   (or unset {STRICT} to continue without it)",
        )

    if settings.device:
        device = _explicit(settings.device, records, "device", DEVICE)
        reason = f"{DEVICE}={settings.device}"
    else:
        available = sorted(
            (r for r in records if r.kind == "device" and r.status == "available"),
            key=lambda r: -(r.priority or 0),
        )
        if not available:
            raise SelectionError(
                "no device plugin is available (the built-in cpu plugin is missing or broken)",
                "pip install --force-reinstall rlport",
            )
        device = available[0]
        ties = [r for r in available[1:] if r.priority == device.priority]
        if ties:
            names = [device.name, *(t.name for t in ties)]
            raise SelectionError(
                f"device plugins {' and '.join(repr(n) for n in names)} are both available at priority "
                f"{device.priority}; rlport will not guess",
                f"export {DEVICE}={names[0]}   (or {DEVICE}={names[1]}, or uninstall one)",
            )
        passed = [r for r in available[1:]]
        reason = f"highest available priority ({device.priority}): {device.reason}"
        if passed:
            reason += "; also available: " + ", ".join(f"{r.name} ({r.priority})" for r in passed)

    if settings.fabrics is not None:
        fabrics = [_explicit(n, records, "fabric", FABRICS) for n in settings.fabrics]
    else:
        fabrics = [r for r in records if r.kind == "fabric" and r.status == "available"]
    for record in (device, *fabrics):
        record.status = "active"
    return Selection(device=device, fabrics=fabrics, reason=reason, warnings=warnings)


def leave_out_fabrics_not_tuning(
    selection: Selection, backend: str, explicit: tuple[str, ...] | None
) -> list[PluginRecord]:
    """Drop from ``selection`` the fabric plugins whose manifest lists backends other than ``backend``
    (the active device plugin's, known once its device info is), marking each unavailable with the
    reason. Returns the records dropped; a plugin named in ``explicit`` (``RLPORT_FABRICS``) raises."""
    dropped = []
    for record in list(selection.fabrics):
        tunes = record.manifest.tunes_backends if record.manifest else ()
        if not tunes or backend in tunes:
            continue
        record.status = "unavailable"
        record.reason = (
            f"tunes {', '.join(tunes)}; the active device plugin {selection.device.name!r} uses {backend}"
        )
        if explicit is not None and record.name in explicit:
            rest = ",".join(n for n in explicit if n != record.name)
            raise SelectionError(
                f"{FABRICS}={','.join(explicit)} names {record.name!r}, which {record.reason}",
                f"export {FABRICS}={rest}   (or select a device plugin whose backend it tunes: "
                f"{DEVICE}=<name>)",
            )
        selection.fabrics.remove(record)
        dropped.append(record)
    return dropped
