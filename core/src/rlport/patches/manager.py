"""The patch manager: collects each active plugin's declared patches, has them planned
(:mod:`rlport.patches.plan`) and applied (:mod:`rlport.patches.transact`), and keeps the records.

Per plugin, all or nothing: every target is resolved before anything is changed; if one patch fails
(its target is missing, or present for ``added``; its replacement cannot be imported; its wrapper
raises; verification fails; another plugin owns the target), none of that plugin's patches stays in
effect. A patch whose distribution is outside the declared version range (or not installed) is
skipped with the reason and does not block the others. Patches of modules that are not imported yet
wait for the import hook (status ``pending``) and apply when the module is first imported; a failure
then rolls back that plugin's patches applied earlier, too. Each such late decision is a
:class:`~rlport.patches.record.PatchEvent`, handed to the reporter (:meth:`PatchManager.set_reporter`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.metadata
import itertools
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from rlport.errors import PatchError
from rlport.patches import plan, transact
from rlport.patches.hook import PendingFinder
from rlport.patches.plan import Decision, Entry
from rlport.patches.record import PatchEvent, PatchRecord
from rlport.patches.resolve import ResolveError
from rlport.types import PatchSpec

log = logging.getLogger("rlport.patches")

Reporter = Callable[[PatchEvent], None]


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
        self._entries: list[Entry] = []
        self._done: list[str] = []
        self._watched: set[str] = set()
        self._finder = PendingFinder(self._watched, self._on_import)
        self._strict = False
        self._seq = itertools.count(1)
        self._reverted = False
        self._reporter: Reporter | None = None
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
        range (unless declared ``expected_skip``), raises :class:`~rlport.errors.PatchError` (after
        that plugin's patches were rolled back); a patch whose distribution is not installed at all
        is skipped even then. A pending patch that fails when its module is imported later raises
        from that import.
        """
        with self._lock:
            self._begin(strict)
            try:
                for name in plugin_names:
                    if name in self._done:
                        continue
                    self._done.append(name)
                    plugin = pm.get_plugin(name)
                    if plugin is None:
                        log.warning("rlport patches: plugin %r is not registered; no patches collected", name)
                        continue
                    self._take(self._collect(pm, name, plugin))
            finally:
                self._settle()
            return self.records

    def apply_specs(self, plugin: str, specs: Iterable[PatchSpec], strict: bool = False) -> list[PatchRecord]:
        """Apply ``specs`` as if plugin ``plugin`` had declared them (for tests and embedding);
        same rules as :meth:`apply_from_plugins`, returns that plugin's records."""
        with self._lock:
            self._begin(strict)
            if plugin in self._done:
                return [e.record for e in self._entries if e.record.plugin == plugin]
            self._done.append(plugin)
            entries = [plan.new_entry(plugin, spec, plugin) for spec in specs]
            try:
                self._take(entries)
            finally:
                self._settle()
            return [entry.record for entry in entries]

    def set_reporter(self, reporter: Reporter | None) -> None:
        """Call ``reporter(event)`` each time pending patches are decided after ``rlport.init()``
        (applied or failed at their module's import); ``None`` stops reporting. One reporter per
        process (``rlport.init()`` sets the summary's); an exception it raises is logged."""
        with self._lock:
            self._reporter = reporter

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
        with self._lock:
            applied = [e for e in self._entries if e.record.status == "applied"]
            changed = []
            for entry, now in transact.overwritten(applied):
                entry.mark(
                    "failed",
                    f"applied, but other code replaced it afterwards (now {now!r})",
                    f"find what assigns {entry.record.target} after rlport.init() and declare that "
                    "change as a patch (PatchSpec) so rlport can check it",
                )
                changed.append(entry.record)
            return changed

    def problems(self) -> list[tuple[str, str]]:
        """``(finding, fix)`` for each patch a user must act on, for ``rlport doctor``.

        Failed patches (at init or later, when their module was imported; with how many of the
        plugin's other patches that took down), patches skipped because the installed version is
        outside their range, and applied patches that other code has overwritten since. Not a
        problem: a patch skipped because its distribution is not installed, or one the plugin
        declared ``expected_skip``. Patches still pending are not checked: call
        :meth:`import_targets` first to decide them.
        """
        self.verify()
        found = []
        with self._lock:
            for entry in self._entries:
                rec = entry.record
                if not rec.is_problem:
                    continue
                when = f" when {rec.module} was imported" if rec.late and rec.status == "failed" else ""
                finding = f"patch {entry.name} of plugin {rec.plugin!r} {rec.status}{when}: {rec.detail}"
                blocked = [
                    e for e in self._entries
                    if e is not entry and e.record.plugin == rec.plugin and e.record.blocked_by == rec.target
                ]  # fmt: skip
                if blocked:
                    finding += f" (so {len(blocked)} other patch(es) of {rec.plugin!r} are not in effect)"
                found.append((finding, rec.fix))
        return found

    def refresh(self) -> list[PatchRecord]:
        """Apply pending patches whose module has been imported without the hook seeing it
        (for example imported by a legacy loader); return the records that changed."""
        with self._lock:
            before = {id(e): e.record.status for e in self._entries}
            try:
                self._refresh_loaded()
            finally:
                self._sync_hook()
            return [e.record for e in self._entries if before.get(id(e)) != e.record.status]

    def import_targets(self) -> dict[str, str]:
        """Import the module of every pending patch now, so that each is decided (``rlport info
        --import-targets``, ``rlport doctor``); return ``{module: error}`` for each whose import
        raised. A module that does not exist fails its patches (the plugin names a module that the
        installed release lacks); one whose import raises for another reason leaves them pending,
        with the error in ``detail``. Under strict mode a patch that fails here does not raise."""
        with self._lock:
            modules = sorted({e.record.module for e in self._entries if e.record.status == "pending"})
        errors: dict[str, str] = {}
        for name in modules:
            try:
                importlib.import_module(name)
            except PatchError:
                continue  # strict mode: the records say what failed
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"
                with self._lock, contextlib.suppress(PatchError):
                    self._import_failed(name, error)
        with contextlib.suppress(PatchError):
            self.refresh()
        return errors

    def revert_all(self) -> list[PatchRecord]:
        """Restore every original identity for identity, most recent first, and remove the import hook.

        Applied patches become ``reverted``; pending ones too (they will not apply any more). One
        that other code has overwritten since it was applied is left as it is and marked ``failed``.
        Returns the records that could not be reverted.
        """
        stuck = []
        with self._lock:
            for entry, error in transact.undo(e for e in self._entries if e.record.status == "applied"):
                if error is None:
                    entry.mark("reverted", "original restored")
                else:
                    entry.mark("failed", f"not reverted: {error}", "restart the process to get the originals")
                    stuck.append(entry.record)
            for entry in self._entries:
                if entry.record.status == "pending":
                    entry.mark("reverted", "was pending; the import hook is removed")
            self._watched.clear()
            self._finder.remove()
            self._reverted = True
        return stuck

    # ------------------------------------------------------------------ collection

    def _collect(self, pm: Any, name: str, plugin: Any) -> list[Entry]:
        impls = [impl for impl in pm.hook.rlport_patches.get_hookimpls() if impl.plugin is plugin]
        dist = _plugin_distribution(plugin)
        entries: list[Entry] = []
        for impl in impls:
            try:
                specs = impl.function()
            except Exception as error:
                entries.append(plan.hook_failure(name, dist, f"raised {type(error).__name__}: {error}"))
                continue
            if specs is None:
                continue
            if not isinstance(specs, (list, tuple)):
                entries.append(plan.hook_failure(name, dist, f"returned {type(specs).__name__}, not a list"))
                continue
            for spec in specs:
                if isinstance(spec, PatchSpec):
                    entries.append(plan.new_entry(name, spec, dist))
                else:
                    entries.append(plan.hook_failure(name, dist, f"returned {spec!r}, not a PatchSpec"))
        return entries

    # ------------------------------------------------------------------ deciding one plugin at init

    def _begin(self, strict: bool) -> None:
        if self._reverted:
            self._entries.clear()
            self._done.clear()
            self._reverted = False
        self._strict = strict

    def _settle(self) -> None:
        self._refresh_loaded()
        self._sync_hook()

    def _take(self, entries: list[Entry]) -> None:
        """Plan one plugin's patches and apply the loaded ones, all or nothing; the rest wait."""
        decisions = plan.plan_plugin(entries, self._top)
        ready = self._note(entries, decisions)
        failed = next((e for e in entries if e.record.status == "failed"), None) or self._commit(ready)
        if failed is not None:
            self._roll_back_plugin(failed, entries)
        self._entries.extend(entries)  # visible to the import hook only once decided
        self._watched.update(e.record.module for e in entries if e.record.status == "pending")
        if self._strict:
            self._raise_if_problems(entries)

    def _note(self, entries: list[Entry], decisions: list[Decision]) -> list[Entry]:
        """Record what planning decided for each entry; return those ready to apply, in order."""
        ready = []
        for entry, decision in zip(entries, decisions, strict=True):
            entry.record.kind = decision.kind or entry.record.kind
            entry.resolution, entry.below = decision.resolution, decision.below
            if decision.status == "ready":
                ready.append(entry)
            else:
                entry.mark(decision.status, decision.detail, decision.fix)
        return ready

    def _commit(self, ready: list[Entry]) -> Entry | None:
        """Apply each ready entry in order; return the first that failed (the rest untouched)."""
        for entry in ready:
            try:
                transact.apply(entry, next(self._seq))
            except ResolveError as error:
                entry.mark("failed", str(error), error.fix or plan.default_fix(entry))
                return entry
            entry.mark("applied", transact.applied_detail(entry))
        return None

    def _roll_back_plugin(self, cause: Entry, entries: list[Entry]) -> None:
        """All or nothing: take every patch in ``entries`` (one plugin's) out of effect because of
        ``cause``: applied ones are restored, pending and ready ones will not apply."""
        why = f"{cause.name} {cause.record.status}"
        if cause.record.late:
            why += f" when {cause.record.module} was imported"
        for entry, error in transact.undo(e for e in entries if e.record.status == "applied"):
            if error is None:
                entry.mark("skipped", f"rolled back because {why}", blocked_by=cause.record.target)
            else:
                entry.mark("failed", f"could not be rolled back: {error}", "restart the process")
        for entry in entries:
            if entry.record.status == "pending" and entry is not cause:
                entry.mark(
                    "skipped",
                    f"not applied because {why} (all or nothing per plugin)",
                    blocked_by=cause.record.target,
                )

    def _raise_if_problems(self, entries: list[Entry]) -> None:
        bad = [e for e in entries if e.record.is_problem]
        if not bad:
            return
        self._roll_back_plugin(bad[0], entries)
        first = bad[0].record
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PatchError(
            f"RLPORT_STRICT: patch {bad[0].name} of plugin {first.plugin!r} {first.status}: "
            f"{first.detail}{more}",
            first.fix,
        )

    def _top(self, key: str) -> Entry | None:
        """The latest entry in effect or pending on ``key`` (plugins are decided in order, and a
        later one may only go on top of an earlier one's patch)."""
        for entry in reversed(self._entries):
            if entry.key == key and entry.record.status in ("applied", "pending"):
                return entry
        return None

    # ------------------------------------------------------------------ pending patches

    def _on_import(self, module: types.ModuleType) -> None:
        with self._lock:
            try:
                self._apply_pending(module)
            finally:
                self._sync_hook()

    def _refresh_loaded(self) -> None:
        """Apply pending patches of modules that are in ``sys.modules`` already (imported while
        their plugin's patches were being resolved, or by a loader the hook cannot wrap)."""
        for name in sorted({e.record.module for e in self._entries if e.record.status == "pending"}):
            module = sys.modules.get(name)
            if isinstance(module, types.ModuleType):
                self._apply_pending(module)

    def _apply_pending(self, module: types.ModuleType) -> None:
        name = module.__name__
        self._watched.discard(name)
        events = [
            self._decide_late(name, group, plan.plan_import(group, module)) for group in self._waiting(name)
        ]
        self._announce(events)

    def _import_failed(self, name: str, error: Exception) -> None:
        """``import name`` raised: a module that does not exist fails its patches; any other error
        is the module's own and leaves them pending, saying so."""
        missing = (
            isinstance(error, ModuleNotFoundError)
            and error.name is not None
            and (name == error.name or name.startswith(error.name + "."))
        )
        if not missing:
            for group in self._waiting(name):
                for entry in group:
                    entry.mark(
                        "pending", f"applies when {name} is first imported; importing it raised {error}"
                    )
            return
        events = []
        for group in self._waiting(name):
            why = (
                f"module {name} cannot be found in {group[0].record.distribution} {group[0].record.installed}"
            )
            fix = f"pip install -U {group[0].plugin_dist}  # a release made for the installed one"
            events.append(self._decide_late(name, group, [Decision("failed", why, fix)] * len(group)))
        self._watched.discard(name)
        self._announce(events)

    def _waiting(self, name: str) -> list[list[Entry]]:
        """The pending entries of module ``name``, one group per plugin, in plugin order."""
        groups: dict[str, list[Entry]] = {}
        for entry in self._entries:
            if entry.record.status == "pending" and entry.record.module == name:
                groups.setdefault(entry.record.plugin, []).append(entry)
        return list(groups.values())

    def _decide_late(self, name: str, group: list[Entry], decisions: list[Decision]) -> PatchEvent:
        """Apply one plugin's pending patches of module ``name`` all or nothing; on a failure roll
        back the plugin's patches applied before (of every module)."""
        plugin = group[0].record.plugin
        before = {id(e): (e.record.status, e.record.detail) for e in self._entries}
        for entry in group:
            entry.record.late = True
        ready = self._note(group, decisions)
        failed = next((e for e in group if e.record.status == "failed"), None) or self._commit(ready)
        if failed is not None:
            self._roll_back_plugin(failed, [e for e in self._entries if e.record.plugin == plugin])
        changed = [e.record for e in self._entries if before[id(e)] != (e.record.status, e.record.detail)]
        return PatchEvent(
            module=name,
            plugin=plugin,
            outcome="failed" if failed is not None else "applied",
            changed=tuple(copy.copy(r) for r in changed),
            records=tuple(copy.copy(e.record) for e in self._entries),
            failed=copy.copy(failed.record) if failed is not None else None,
        )

    def _announce(self, events: list[PatchEvent]) -> None:
        """Hand each event to the reporter; under strict mode a failure then raises."""
        for event in events:
            if self._reporter is not None:
                try:
                    self._reporter(event)
                except Exception:
                    log.exception("rlport patches: the reporter raised on %s", event.module)
        failed = next((e.failed for e in events if e.failed is not None), None)
        if failed is not None and self._strict:
            raise PatchError(
                f"RLPORT_STRICT: patch {failed.target} of plugin {failed.plugin!r} failed when "
                f"{failed.module} was imported: {failed.detail}; the plugin's other patches were rolled back",
                failed.fix,
            )

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
