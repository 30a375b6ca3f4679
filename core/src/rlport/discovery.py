"""Finding and loading plugins: entry points, manifests, hook-API versions, hook names.

Nothing here activates a plugin. Every installed plugin becomes a :class:`PluginRecord`; one that
cannot be loaded or validated is recorded as ``broken`` with its error and a fix, never dropped.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from rlport import hookspecs
from rlport._version import HOOK_API_VERSION, __version__
from rlport.settings import PLUGINS, Settings
from rlport.types import Finding, Manifest

GROUP = "rlport.plugins"
CORE_DISTRIBUTION = "rlport"

Status = Literal["active", "available", "unavailable", "broken", "disabled"]


@dataclass
class PluginRecord:
    """One installed plugin as the core sees it. ``obj`` is the loaded plugin object (None when
    it was not loaded). ``status`` starts as loaded/broken/disabled and is refined by selection."""

    name: str
    entry_point: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: Status = "available"
    reason: str = ""
    fix: str = ""
    kind: str | None = None
    priority: int | None = None
    hooks: list[str] = field(default_factory=list)
    obj: Any = None
    manifest: Manifest | None = None
    error: str | None = None  # traceback of the failure, for `rlport plugins --json` and doctor
    env: dict[str, str] = field(default_factory=dict)  # what its probe asked to export before torch
    findings: list[Finding] = field(default_factory=list)  # machine problems its probe reported

    @property
    def label(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})" if self.distribution else self.name

    def mark_broken(self, reason: str, fix: str, error: BaseException | None = None) -> None:
        self.status, self.reason, self.fix = "broken", reason, fix
        if error is not None:
            self.error = "".join(traceback.format_exception(error)).rstrip()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entry_point": self.entry_point,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "fix": self.fix,
            "priority": self.priority,
            "hooks": self.hooks,
            "error": self.error,
            "env": dict(self.env),
            "findings": [{"check": f.check, "problem": f.problem, "fix": f.fix} for f in self.findings],
        }


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _reinstall(record: PluginRecord) -> str:
    dist = record.distribution or record.name
    return f"pip install --force-reinstall {dist}   (or remove it: pip uninstall {dist})"


def _check_manifest(record: PluginRecord) -> None:
    manifest = getattr(record.obj, "rlport_manifest", None)
    if not isinstance(manifest, Manifest):
        record.mark_broken(
            f"plugin {record.label} has no rlport_manifest (found {type(manifest).__name__}); "
            "expected rlport.types.Manifest(name, kind, hook_api)",
            f"ask the plugin's maintainers to declare a manifest; meanwhile: {_reinstall(record)}",
        )
        return
    record.manifest, record.kind = manifest, manifest.kind
    if manifest.kind not in ("device", "fabric"):
        record.mark_broken(
            f"plugin {record.label} declares kind={manifest.kind!r}; expected 'device' or 'fabric'",
            "fix the plugin's rlport_manifest",
        )
        return
    tunes = manifest.tunes_backends
    if isinstance(tunes, str) or not all(isinstance(b, str) and b for b in tunes):
        record.mark_broken(
            f"plugin {record.label} declares tunes_backends={tunes!r}; expected a tuple of backend names",
            "fix the plugin's rlport_manifest, for example tunes_backends=('nccl',)",
        )
        return
    try:
        supported = SpecifierSet(manifest.hook_api)
    except InvalidSpecifier as exc:
        record.mark_broken(
            f"plugin {record.label} declares hook_api={manifest.hook_api!r}, not a version specifier",
            "fix the plugin's rlport_manifest, for example hook_api='>=1.0,<2'",
            exc,
        )
        return
    if not supported.contains(Version(HOOK_API_VERSION), prereleases=True):
        core = Version(HOOK_API_VERSION)
        needs_newer_core = any(
            s.operator in (">", ">=", "~=", "==") and Version(s.version) > core for s in supported
        )
        fix = (
            "pip install --upgrade rlport"
            if needs_newer_core
            else f"pip install --upgrade {record.distribution or record.name}   "
            f"(or install an rlport release with hook API {manifest.hook_api})"
        )
        record.mark_broken(
            f"plugin {record.label} supports hook API {manifest.hook_api}, but rlport {__version__} "
            f"provides hook API {HOOK_API_VERSION}",
            fix,
        )


def _check_hooks(record: PluginRecord) -> None:
    """Register into a scratch manager: unknown hook names and bad signatures are errors."""
    pm = new_plugin_manager()
    try:
        pm.register(record.obj, name=record.name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        record.mark_broken(
            f"plugin {record.label} does not match rlport's hook specs: {exc}",
            f"rename or remove the hook (known hooks: `python -m pydoc rlport.hookspecs`); "
            f"meanwhile: {_reinstall(record)}",
            exc,
        )
        return
    callers = [c for c in pm.get_hookcallers(record.obj) or [] if c.name.startswith("rlport_")]
    wrappers = sorted(
        impl.function.__name__
        for caller in callers
        for impl in caller.get_hookimpls()
        if impl.plugin is record.obj and (impl.wrapper or impl.hookwrapper)
    )
    if wrappers:
        record.mark_broken(
            f"plugin {record.label} declares hook wrappers ({', '.join(wrappers)}); rlport resolves each hook "
            "once and keeps the answer, so a wrapper would never see the calls it means to wrap",
            "implement the hook itself (return None to defer to the next plugin) instead of wrapper=True",
        )
        return
    record.hooks = sorted(caller.name for caller in callers)


def _load(ep: metadata.EntryPoint, settings: Settings) -> PluginRecord:
    dist = getattr(ep, "dist", None)
    dist_name = dist.metadata["Name"] if dist is not None else None
    record = PluginRecord(
        name=ep.name,
        entry_point=ep.value,
        distribution=dist_name,
        version=dist.version if dist is not None else None,
        builtin=dist_name == CORE_DISTRIBUTION,
    )
    if not settings.allows(record.name, record.builtin):
        allowed = ",".join(sorted(settings.allow or ()))
        record.status = "disabled"
        record.reason = f"not in {PLUGINS}={allowed!r}"
        record.fix = f"export {PLUGINS}={','.join(filter(None, [allowed, record.name]))}"
        return record
    try:
        record.obj = ep.load()
    except Exception as exc:  # a plugin's import error must never stop the core
        record.mark_broken(
            f"plugin {record.label} failed to import ({ep.value}): {type(exc).__name__}: {exc}",
            _reinstall(record),
            exc,
        )
        return record
    _check_manifest(record)
    if record.status != "broken":
        _check_hooks(record)
    return record


def discover(settings: Settings) -> list[PluginRecord]:
    """Every plugin installed in the ``rlport.plugins`` group, loaded and validated (not probed)."""
    records: list[PluginRecord] = []
    seen: dict[str, PluginRecord] = {}
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        record = _load(ep, settings)
        first = seen.get(record.name)
        if first is not None:
            if (first.distribution, first.entry_point) == (record.distribution, record.entry_point):
                continue  # the same distribution found twice on sys.path
            record.mark_broken(
                f"plugin name {record.name!r} is installed twice: {first.label} and {record.label}",
                f"pip uninstall {record.distribution or record.name}",
            )
        seen.setdefault(record.name, record)
        records.append(record)
    return records
