"""The patch manager: collects each active plugin's declared patches and applies, verifies, reports
and reverts them.

Per plugin, all or nothing: every target is resolved before anything is changed; if one patch fails
(its target is missing, or present for ``added``; its replacement cannot be imported; its wrapper
raises; verification fails; another plugin owns the target), none of that plugin's patches stays in
effect. A patch whose distribution is outside the declared version range (or not installed) is
skipped with the reason and does not block the others. Patches of modules that are not imported yet
wait for the import hook (status ``pending``); those apply all-or-nothing per plugin and module when
the module is first imported.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rlport.errors import PatchError
from rlport.patches import ops, resolve
from rlport.patches.hook import PendingFinder
from rlport.patches.record import PatchRecord
from rlport.types import PatchSpec

log = logging.getLogger("rlport.patches")

_HOOK = "<rlport_patches()>"


@dataclass(eq=False)
class _Entry:
    """A record plus what the manager needs to act on it."""

    record: PatchRecord
    spec: PatchSpec | None
    target: resolve.Target | None
    plugin_dist: str = ""
    # set while resolving / after applying
    owner_obj: Any = None
    replacement: Any = None
    applied: ops.Applied | None = None
    seq: int = 0
    below: _Entry | None = field(default=None, repr=False)


def _plugin_distribution(plugin: Any) -> str:
    """The distribution that ships ``plugin`` (for fixes); falls back to its module name."""
    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    top = module.partition(".")[0]
    return _distributions_of(top) or top


@functools.lru_cache(maxsize=64)
def _distributions_of(top: str) -> str:
    names = importlib.metadata.packages_distributions().get(top, [])
    return names[0] if names else ""


class PatchManager:
    """Applies declared patches for one process. Use :func:`get_manager` for the process's one.

    ``records`` lists every declared patch in declaration order (plugins in the order given to
    :meth:`apply_from_plugins`). Thread-safe; the import hook calls back into it.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: list[_Entry] = []
        self._done: list[str] = []
        self._stacks: dict[str, list[_Entry]] = {}
        self._watched: set[str] = set()
        self._finder = PendingFinder(self._watched, self._on_import)
        self._strict = False
        self._seq = 0
        self._reverted = False
        self.pid = os.getpid()

    # ------------------------------------------------------------------ public API

    @property
    def records(self) -> list[PatchRecord]:
        """Every declared patch and its status, in declaration order."""
        with self._lock:
            return [entry.record for entry in self._entries]

    @property
    def plugins(self) -> list[str]:
        """The plugins whose patches were collected, in order."""
        return list(self._done)

    def apply_from_plugins(
        self, pm: Any, plugin_names: Iterable[str], strict: bool = False
    ) -> list[PatchRecord]:
        """Collect and apply the patches of each named plugin, in order; return all records.

        ``pm`` is the pluggy ``PluginManager`` holding the active plugins; ``plugin_names`` the
        active plugins in order (device plugin first, then fabric plugins). Each plugin's
        ``rlport_patches`` implementation is called directly, so every patch is attributed to its
        plugin. A plugin already handled in this process is not applied again, so a second call
        (a second ``rlport.init()``, or a forked worker that inherited the patched modules) changes
        nothing and returns the existing records. After :meth:`revert_all` a call applies afresh.

        ``strict``: a failed patch, or one skipped because the installed version is outside its
        range, raises :class:`~rlport.errors.PatchError` (after that plugin's patches were rolled
        back); a patch whose distribution is not installed at all is skipped even then. A pending
        patch that fails when its module is imported later raises from that import.
        """
        with self._lock:
            if self._reverted:
                self._entries.clear()
                self._done.clear()
                self._reverted = False
            self._strict = strict
            try:
                for name in plugin_names:
                    if name in self._done:
                        continue
                    self._done.append(name)
                    plugin = pm.get_plugin(name)
                    if plugin is None:
                        log.warning("rlport patches: plugin %r is not registered; no patches collected", name)
                        continue
                    entries = self._collect(pm, name, plugin)
                    self._apply_plugin(entries)
                    self._entries.extend(entries)  # visible to the import hook only once decided
                    if strict:
                        self._raise_if_problems(entries)
            finally:
                self._refresh_loaded()
                self._sync_hook()
            return self.records

    def apply_specs(self, plugin: str, specs: Iterable[PatchSpec], strict: bool = False) -> list[PatchRecord]:
        """Apply ``specs`` as if plugin ``plugin`` had declared them (for tests and embedding);
        same rules as :meth:`apply_from_plugins`, returns that plugin's records."""
        with self._lock:
            if self._reverted:
                self._entries.clear()
                self._done.clear()
                self._reverted = False
            if plugin in self._done:
                return [e.record for e in self._entries if e.record.plugin == plugin]
            self._done.append(plugin)
            self._strict = strict
            try:
                entries = [self._entry(plugin, spec, plugin) for spec in specs]
                self._apply_plugin(entries)
                self._entries.extend(entries)
                if strict:
                    self._raise_if_problems(entries)
            finally:
                self._refresh_loaded()
                self._sync_hook()
            return [entry.record for entry in entries]

    def to_json(self) -> list[dict[str, Any]]:
        """The records as JSON-ready dicts (``rlport info --json``, ``RLPORT_SUMMARY=json``)."""
        return [record.to_dict() for record in self.records]

    def render(self, console: Any = None) -> Any:
        """The patch section of the summary as a rich renderable; printed too if ``console`` is given."""
        from rlport.patches.render import render_table

        table = render_table(self.records)
        if console is not None:
            console.print(table)
        return table

    def verify(self) -> list[PatchRecord]:
        """Re-check every applied patch; one that other code has replaced since becomes ``failed``.

        Returns the records that changed. (Catches the silent overwrite of a patched function.)
        """
        changed = []
        with self._lock:
            for entry in self._entries:
                if entry.record.status == "applied" and entry.applied and not ops.is_current(entry.applied):
                    _, now = resolve.own_attribute(entry.applied.owner, entry.applied.name)
                    self._fail(
                        entry,
                        f"applied, but other code replaced it afterwards (now {now!r})",
                        f"find what assigns {entry.record.target} after rlport.init() and declare that "
                        "change as a patch (PatchSpec) so rlport can check it",
                    )
                    changed.append(entry.record)
        return changed

    def problems(self) -> list[tuple[str, str]]:
        """``(finding, fix)`` for each patch a user must act on, for ``rlport doctor``.

        Failed patches (with how many of the plugin's other patches that took down), patches
        skipped because the installed version is outside their range, and applied patches that other
        code has overwritten since. A patch skipped because its distribution is not installed is not
        a problem.
        """
        self.verify()
        found = []
        with self._lock:
            for entry in self._entries:
                rec = entry.record
                if not rec.is_problem:
                    continue
                where = rec.target or _HOOK
                finding = f"patch {where} of plugin {rec.plugin!r} {rec.status}: {rec.detail}"
                blocked = [e for e in self._entries if e.record.blocked_by == rec.target and e is not entry]
                blocked = [e for e in blocked if e.record.plugin == rec.plugin]
                if blocked:
                    finding += f" (so {len(blocked)} other patch(es) of {rec.plugin!r} are not in effect)"
                found.append((finding, rec.fix))
        return found

    def refresh(self) -> list[PatchRecord]:
        """Apply pending patches whose module has been imported without the hook seeing it
        (for example imported by a legacy loader); return the records that changed."""
        with self._lock:
            before = {id(e): e.record.status for e in self._entries}
            self._refresh_loaded()
            self._sync_hook()
            return [e.record for e in self._entries if before.get(id(e)) != e.record.status]

    def _refresh_loaded(self) -> None:
        """Apply pending patches of modules that are in ``sys.modules`` already (imported while
        their plugin's patches were being resolved, or by a loader the hook cannot wrap)."""
        for name in sorted({e.record.module for e in self._entries if e.record.status == "pending"}):
            module = sys.modules.get(name)
            if isinstance(module, types.ModuleType):
                self._apply_pending(module)

    def revert_all(self) -> list[PatchRecord]:
        """Restore every original identity for identity, most recent first, and remove the import hook.

        Applied patches become ``reverted``; pending ones too (they will not apply any more). One
        that other code has overwritten since it was applied is left as it is and marked ``failed``.
        Returns the records that could not be reverted.
        """
        stuck = []
        with self._lock:
            applied = sorted((e for e in self._entries if e.record.status == "applied"), key=lambda e: -e.seq)
            for entry in applied:
                try:
                    ops.restore(entry.applied)  # type: ignore[arg-type]
                except resolve.ResolveError as error:
                    self._fail(entry, f"not reverted: {error}", "restart the process to get the originals")
                    stuck.append(entry.record)
                    continue
                entry.record.status = "reverted"
                entry.record.detail = "original restored"
            for entry in self._entries:
                if entry.record.status == "pending":
                    entry.record.status = "reverted"
                    entry.record.detail = "was pending; the import hook is removed"
            self._stacks.clear()
            self._watched.clear()
            self._finder.remove()
            self._reverted = True
        return stuck

    # ------------------------------------------------------------------ collection

    def _collect(self, pm: Any, name: str, plugin: Any) -> list[_Entry]:
        impls = [impl for impl in pm.hook.rlport_patches.get_hookimpls() if impl.plugin is plugin]
        dist = _plugin_distribution(plugin)
        entries: list[_Entry] = []
        for impl in impls:
            try:
                specs = impl.function()
            except Exception as error:
                entries.append(self._hook_failure(name, dist, f"raised {type(error).__name__}: {error}"))
                continue
            if specs is None:
                continue
            if not isinstance(specs, (list, tuple)):
                entries.append(self._hook_failure(name, dist, f"returned {type(specs).__name__}, not a list"))
                continue
            for spec in specs:
                if isinstance(spec, PatchSpec):
                    entries.append(self._entry(name, spec, dist))
                else:
                    entries.append(self._hook_failure(name, dist, f"returned {spec!r}, not a PatchSpec"))
        return entries

    def _hook_failure(self, plugin: str, dist: str, why: str) -> _Entry:
        record = PatchRecord(
            plugin=plugin, target="", module="", qualname="", owner="", name="", action="", kind="",
            status="failed", reason="", distribution="", installed=None, versions="",
            detail=f"rlport_patches() {why}",
            fix=f"pip install -U {dist}  # and report it to the plugin's maintainers",
        )  # fmt: skip
        return _Entry(record, None, None, dist)

    def _entry(self, plugin: str, spec: PatchSpec, dist: str) -> _Entry:
        try:
            target: resolve.Target | None = resolve.parse_target(spec.target)
        except resolve.ResolveError:
            target = None
        record = PatchRecord(
            plugin=plugin,
            target=str(spec.target),
            module=target.module if target else "",
            qualname=target.qualname if target else "",
            owner=target.owner if target else "",
            name=target.name if target else "",
            action=str(spec.action),
            kind="",
            status="pending",
            reason=spec.reason,
            distribution=spec.distribution,
            installed=resolve.installed_version(spec.distribution),
            versions=spec.versions,
            upstream=spec.upstream,
            remove_when=spec.remove_when,
            stacks_on=spec.stacks_on,
        )
        return _Entry(record, spec, target, dist)

    # ------------------------------------------------------------------ applying

    def _apply_plugin(self, entries: list[_Entry]) -> None:
        """Resolve all of one plugin's patches, then apply the loaded ones, all or nothing."""
        live = [e for e in entries if e.record.status != "failed"]
        seen: set[str] = set()
        ready: list[_Entry] = []
        for entry in live:
            try:
                self._check_declaration(entry, seen)
                skip = self._version_gate(entry)
                if skip:
                    entry.record.status = "skipped"
                    entry.record.detail, entry.record.fix = skip
                    entry.record.kind = self._guess_kind(entry)
                    continue
                self._check_owner(entry)
                if entry.target.module in sys.modules:  # type: ignore[union-attr]
                    self._resolve_loaded(entry, sys.modules[entry.target.module])  # type: ignore[union-attr]
                    ready.append(entry)
                elif not resolve.module_findable(entry.target.module):  # type: ignore[union-attr]
                    raise resolve.ResolveError(
                        f"module {entry.target.module} cannot be found",  # type: ignore[union-attr]
                        f"pip install -U {entry.plugin_dist}  # the patch names a module that "
                        f"{entry.record.distribution} {entry.record.installed} does not have",
                    )
            except resolve.ResolveError as error:
                self._fail(entry, str(error), error.fix or self._default_fix(entry))
        failed = next((e for e in entries if e.record.status == "failed"), None)
        if failed is not None:
            self._block(entries, failed, "not applied")
            return
        for entry in ready:
            try:
                self._set(entry)
            except resolve.ResolveError as error:
                self._fail(entry, str(error), error.fix or self._default_fix(entry))
                self._roll_back(entries, entry)
                return
        for entry in entries:
            if entry.record.status == "pending":
                entry.record.detail = f"applies when {entry.target.module} is first imported"  # type: ignore[union-attr]
                self._push(entry)
                self._watched.add(entry.target.module)  # type: ignore[union-attr]

    def _check_declaration(self, entry: _Entry, seen: set[str]) -> None:
        spec = entry.spec
        assert spec is not None
        if entry.target is None:
            resolve.parse_target(spec.target)  # raises with the reason
        if spec.action not in resolve.ACTIONS:
            raise resolve.ResolveError(
                f"action {spec.action!r} is not one of {', '.join(resolve.ACTIONS)}",
                "declare action='added', 'replaced' or 'wrapped' (a wrapper receives the original)",
            )
        key = entry.target.key  # type: ignore[union-attr]
        if key in seen:
            raise resolve.ResolveError(
                f"{entry.record.plugin!r} declares {key} twice",
                "merge the two into one patch (one wrapper may do both changes)",
            )
        seen.add(key)

    def _version_gate(self, entry: _Entry) -> tuple[str, str] | None:
        rec = entry.record
        why = resolve.check_version(rec.distribution, rec.installed, rec.versions)
        if why is None:
            return None
        if rec.installed is None:
            return (
                why,
                f"pip install '{rec.distribution}{rec.versions}'  # only if you use {rec.distribution}",
            )
        return why, (
            f"pip install '{rec.distribution}{rec.versions}'  # or a release of {entry.plugin_dist} made "
            f"for {rec.distribution} {rec.installed}: pip install -U {entry.plugin_dist}"
        )

    @staticmethod
    def _guess_kind(entry: _Entry) -> str:
        """The kind of a patch that is not applied, when its module is loaded (else ``""``)."""
        target, spec = entry.target, entry.spec
        module = sys.modules.get(target.module) if target else None
        if module is None or spec is None or target is None:
            return ""
        try:
            owner = resolve.walk(module, target.owner)
        except resolve.ResolveError:
            return ""
        exists, current = resolve.raw_attribute(owner, target.name)
        if spec.action == "added" or not exists:
            return "" if isinstance(spec.replacement, str) else resolve.kind_of(spec.replacement, owner)
        return resolve.kind_of(current, owner)

    def _check_owner(self, entry: _Entry) -> None:
        """Refuse a target another plugin has patched unless ``stacks_on`` names that plugin."""
        key = entry.target.key  # type: ignore[union-attr]
        top = self._top(key)
        if top is None or top.record.plugin == entry.record.plugin:
            return
        first, second = top.record.plugin, entry.record.plugin
        if entry.spec.stacks_on == first:  # type: ignore[union-attr]
            entry.below = top
            return
        declared = f" (it declares stacks_on={entry.spec.stacks_on!r})" if entry.spec.stacks_on else ""  # type: ignore[union-attr]
        raise resolve.ResolveError(
            f"{key} is already patched by plugin {first!r} ({top.record.action}); plugin {second!r} may "
            f"not patch it too{declared}",
            f"if {second!r}'s patch is meant to go on top of {first!r}'s, declare stacks_on={first!r} in "
            f"its PatchSpec; otherwise activate only one of them (RLPORT_PLUGINS)",
        )

    def _resolve_loaded(self, entry: _Entry, module: types.ModuleType) -> None:
        """Find the owner object, check existence for the action, import a lazy replacement."""
        target, spec = entry.target, entry.spec
        assert target is not None and spec is not None
        owner = resolve.walk(module, target.owner)
        exists, current = resolve.raw_attribute(owner, target.name)
        here = f"{entry.record.distribution} {entry.record.installed}"
        if spec.action == "added" and exists:
            where = ""
            if isinstance(owner, type):
                where = f" (defined on {resolve.defining_class(owner, target.name).__qualname__})"  # type: ignore[union-attr]
            raise resolve.ResolveError(
                f"{target.key} exists already in {here}{where}; 'added' must not overwrite it",
                f"pip install -U {entry.plugin_dist}  # the plugin should declare action='replaced' "
                f"or 'wrapped' for {entry.record.distribution} {entry.record.installed}",
            )
        if spec.action != "added" and not exists:
            raise resolve.ResolveError(
                f"{target.key} does not exist in {here}; nothing to {spec.action[:-1]}",
                f"pip install -U {entry.plugin_dist}  # a release made for {here}; "
                f"or pin what the patch was written for: pip install '{entry.record.distribution}"
                f"{entry.record.versions}'",
            )
        replacement = spec.replacement
        if isinstance(replacement, str):
            replacement = resolve.load_lazy(replacement)
        entry.owner_obj = owner
        entry.replacement = replacement
        entry.record.kind = resolve.kind_of(replacement if spec.action == "added" else current, owner)

    def _set(self, entry: _Entry) -> None:
        spec = entry.spec
        assert spec is not None and entry.target is not None
        _, current = resolve.raw_attribute(entry.owner_obj, entry.target.name)
        new = ops.replacement_for(spec.action, current if spec.action != "added" else None, entry.replacement)
        entry.applied = ops.set_attribute(entry.owner_obj, entry.target.name, new)
        self._seq += 1
        entry.seq = self._seq
        entry.record.status = "applied"
        entry.record.detail = ""
        entry.record.fix = ""
        if entry.below is not None:
            entry.record.detail = f"stacked on plugin {entry.below.record.plugin!r}'s patch"
        elif spec.stacks_on:
            entry.record.detail = (
                f"stacks_on={spec.stacks_on!r}, which did not patch it; applied to the original"
            )
        if entry not in self._stacks.get(entry.target.key, []):
            self._push(entry)

    def _roll_back(self, entries: list[_Entry], failed: _Entry) -> None:
        for entry in sorted((e for e in entries if e.record.status == "applied"), key=lambda e: -e.seq):
            try:
                ops.restore(entry.applied)  # type: ignore[arg-type]
            except resolve.ResolveError as error:
                self._fail(entry, f"could not be rolled back: {error}", "restart the process")
                continue
            self._pop(entry)
            entry.record.status = "skipped"
            entry.record.detail = f"rolled back because {failed.record.target} {failed.record.status}"
            entry.record.blocked_by = failed.record.target
            entry.record.fix = ""
        self._block(entries, failed, "not applied")

    def _block(self, entries: list[_Entry], failed: _Entry, verb: str) -> None:
        for entry in entries:
            if entry.record.status in ("pending",) and entry is not failed:
                self._pop(entry)
                self._watched_discard(entry)
                entry.record.status = "skipped"
                entry.record.detail = (
                    f"{verb} because {failed.record.target or _HOOK} {failed.record.status} "
                    "(all or nothing per plugin)"
                )
                entry.record.blocked_by = failed.record.target
                entry.record.fix = ""

    def _fail(self, entry: _Entry, why: str, fix: str) -> None:
        self._pop(entry)
        entry.record.status = "failed"
        entry.record.detail = why
        entry.record.fix = fix

    def _default_fix(self, entry: _Entry) -> str:
        return f"pip install -U {entry.plugin_dist}  # and report {entry.record.target} to its maintainers"

    def _raise_if_problems(self, entries: list[_Entry]) -> None:
        bad = [e for e in entries if e.record.is_problem]
        if not bad:
            return
        if any(e.record.status == "applied" for e in entries):
            self._roll_back(entries, bad[0])
        first = bad[0].record
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PatchError(
            f"RLPORT_STRICT: patch {first.target or _HOOK} of plugin {first.plugin!r} {first.status}: "
            f"{first.detail}{more}",
            first.fix,
        )

    # ------------------------------------------------------------------ pending patches

    def _on_import(self, module: types.ModuleType) -> None:
        with self._lock:
            try:
                self._apply_pending(module)
            finally:
                self._sync_hook()

    def _apply_pending(self, module: types.ModuleType) -> None:
        name = module.__name__
        waiting = [e for e in self._entries if e.record.status == "pending" and e.record.module == name]
        self._watched.discard(name)
        groups: dict[str, list[_Entry]] = {}
        for entry in waiting:
            groups.setdefault(entry.record.plugin, []).append(entry)
        bad: list[_Entry] = []
        for group in groups.values():
            for entry in group:
                try:
                    self._resolve_loaded(entry, module)
                except resolve.ResolveError as error:
                    self._fail(entry, str(error), error.fix or self._default_fix(entry))
            failed = next((e for e in group if e.record.status == "failed"), None)
            if failed is None:
                for entry in group:
                    if entry.below is not None and entry.below.record.status != "applied":
                        entry.below = None  # what it stacked on did not apply: goes on the original
                    try:
                        self._set(entry)
                    except resolve.ResolveError as error:
                        self._fail(entry, str(error), error.fix or self._default_fix(entry))
                        failed = entry
                        self._roll_back(group, entry)
                        break
            else:
                self._block(group, failed, "not applied")
            if failed is not None:
                bad.append(failed)
        if bad and self._strict:
            rec = bad[0].record
            raise PatchError(
                f"RLPORT_STRICT: patch {rec.target} of plugin {rec.plugin!r} failed when {name} was imported: "
                f"{rec.detail}",
                rec.fix,
            )

    # ------------------------------------------------------------------ bookkeeping

    def _top(self, key: str) -> _Entry | None:
        stack = self._stacks.get(key, [])
        return stack[-1] if stack else None

    def _push(self, entry: _Entry) -> None:
        stack = self._stacks.setdefault(entry.target.key, [])  # type: ignore[union-attr]
        if entry not in stack:
            stack.append(entry)

    def _pop(self, entry: _Entry) -> None:
        if entry.target is not None:
            stack = self._stacks.get(entry.target.key, [])
            if entry in stack:
                stack.remove(entry)

    def _watched_discard(self, entry: _Entry) -> None:
        module = entry.record.module
        if not any(
            e.record.status == "pending" and e.record.module == module
            for e in self._entries
            if e is not entry
        ):
            self._watched.discard(module)

    def _sync_hook(self) -> None:
        """Keep the finder on ``sys.meta_path`` exactly while some patch is pending."""
        self._watched.intersection_update(
            {e.record.module for e in self._entries if e.record.status == "pending"}
        )
        if self._watched:
            self._finder.install()
        else:
            self._finder.remove()


_MANAGER: PatchManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_manager() -> PatchManager:
    """The process's patch manager (created on first use).

    A forked child inherits it together with the patched modules, so its records stay true there
    and applying again changes nothing; a spawned process starts with a fresh one, and its own
    ``rlport.init()`` applies the patches in that process.
    """
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = PatchManager()
        return _MANAGER


def revert_all() -> list[PatchRecord]:
    """Revert every patch of the process's manager (see :meth:`PatchManager.revert_all`)."""
    return get_manager().revert_all() if _MANAGER is not None else []
