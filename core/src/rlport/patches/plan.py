"""Planning: every check that decides what happens to a declared patch, before anything changes.

:class:`Entry` is the manager's working copy of one declared patch: its record, declaration, parsed
target, and what a transaction stored. :meth:`Entry.mark` is the one place a record's status is set.

The checks (the declaration's shape, the version gate, who owns the target, resolving the target in
its loaded module) read the declaration, the installed versions, ``sys.modules`` and the entries
already in effect, and answer with a :class:`Decision`. They never set an attribute of third-party
code; the only import they make is a lazy replacement's (the plugin's own module).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rlport.patches import ops, resolve
from rlport.patches.record import PatchRecord, Status
from rlport.types import PatchSpec

HOOK = "<rlport_patches()>"
_VERB = {"replaced": "replace", "wrapped": "wrap"}


@dataclass(frozen=True)
class Resolution:
    """A loaded target: the object that owns the attribute, the replacement object (a lazy path
    imported) and the kind of attribute for the summary."""

    owner: Any
    replacement: Any
    kind: str


@dataclass(eq=False)
class Entry:
    """One declared patch: its record plus what the manager needs to act on it."""

    record: PatchRecord
    spec: PatchSpec | None
    target: resolve.Target | None
    plugin_dist: str = ""
    resolution: Resolution | None = None
    applied: ops.Applied | None = None
    seq: int = 0  # order of application, for reverting most recent first
    below: Entry | None = field(default=None, repr=False)  # another plugin's patch this one stacks on

    @property
    def key(self) -> str:
        return self.target.key if self.target is not None else ""

    @property
    def name(self) -> str:
        """The target, or the hook for a failure of ``rlport_patches()`` itself."""
        return self.record.target or HOOK

    def mark(self, status: Status, detail: str = "", fix: str = "", *, blocked_by: str | None = None) -> None:
        """Set the record's status with why and what to do: the one place a status changes."""
        rec = self.record
        rec.status, rec.detail, rec.fix, rec.blocked_by = status, detail, fix, blocked_by


@dataclass(frozen=True)
class Decision:
    """What planning decided for one patch: ``ready`` (resolved, to be applied now), ``pending``
    (its module is not imported yet), ``skipped`` (the version gate) or ``failed``."""

    status: Literal["ready", "pending", "skipped", "failed"]
    detail: str = ""
    fix: str = ""
    kind: str = ""
    resolution: Resolution | None = None
    below: Entry | None = None


# -- entries ---------------------------------------------------------------------------------------


def new_entry(plugin: str, spec: PatchSpec, dist: str) -> Entry:
    """The entry of ``spec``, declared by ``plugin`` (shipped in distribution ``dist``), pending."""
    try:
        target: resolve.Target | None = resolve.parse_target(spec.target)
    except resolve.ResolveError:
        target = None  # check_declaration says why
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
        expected_skip=bool(spec.expected_skip),
    )
    return Entry(record, spec, target, dist)


def hook_failure(plugin: str, dist: str, why: str) -> Entry:
    """A failed entry standing for a ``rlport_patches()`` implementation that answered wrongly."""
    record = PatchRecord(
        plugin=plugin, target="", module="", qualname="", owner="", name="", action="", kind="",
        status="failed", reason="", distribution="", installed=None, versions="",
        detail=f"rlport_patches() {why}",
        fix=f"pip install -U {dist}  # and report it to the plugin's maintainers",
    )  # fmt: skip
    return Entry(record, None, None, dist)


def default_fix(entry: Entry) -> str:
    return f"pip install -U {entry.plugin_dist}  # and report {entry.record.target} to its maintainers"


def failure(entry: Entry, error: resolve.ResolveError) -> Decision:
    return Decision("failed", str(error), error.fix or default_fix(entry))


# -- deciding --------------------------------------------------------------------------------------


def plan_plugin(entries: list[Entry], top: Callable[[str], Entry | None]) -> list[Decision]:
    """Decide each of one plugin's patches at ``rlport.init()``, in declaration order.

    ``top(key)`` is the entry of another plugin in effect (or pending) on a target, if any.
    """
    seen: set[str] = set()
    decisions = []
    for entry in entries:
        if entry.record.status == "failed":  # the hook itself answered wrongly
            decisions.append(Decision("failed", entry.record.detail, entry.record.fix))
            continue
        try:
            decisions.append(_decide(entry, seen, top))
        except resolve.ResolveError as error:
            decisions.append(failure(entry, error))
    return decisions


def _decide(entry: Entry, seen: set[str], top: Callable[[str], Entry | None]) -> Decision:
    target = check_declaration(entry, seen)
    skip = version_gate(entry)
    if skip is not None:
        return skip
    below = check_owner(entry, top(target.key))
    module = sys.modules.get(target.module)
    if module is not None:
        resolution = resolve_target(entry, module)
        return Decision("ready", kind=resolution.kind, resolution=resolution, below=below)
    if not resolve.module_findable(target.module):
        raise resolve.ResolveError(
            f"module {target.module} cannot be found",
            f"pip install -U {entry.plugin_dist}  # the patch names a module that "
            f"{entry.record.distribution} {entry.record.installed} does not have",
        )
    return Decision("pending", f"applies when {target.module} is first imported", below=below)


def plan_import(entries: list[Entry], module: Any) -> list[Decision]:
    """Resolve one plugin's pending patches against ``module``, which has just been imported."""
    decisions = []
    for entry in entries:
        try:
            resolution = resolve_target(entry, module)
        except resolve.ResolveError as error:
            decisions.append(failure(entry, error))
            continue
        below = entry.below if entry.below is not None and entry.below.record.status == "applied" else None
        decisions.append(Decision("ready", kind=resolution.kind, resolution=resolution, below=below))
    return decisions


# -- the checks ------------------------------------------------------------------------------------


def check_declaration(entry: Entry, seen: set[str]) -> resolve.Target:
    """The parsed target of a well-formed declaration; raises for a bad target or action, or a
    target the plugin declares twice (``seen`` collects the plugin's targets)."""
    spec = entry.spec
    assert spec is not None
    target = entry.target or resolve.parse_target(spec.target)  # raises with the reason
    if spec.action not in resolve.ACTIONS:
        raise resolve.ResolveError(
            f"action {spec.action!r} is not one of {', '.join(resolve.ACTIONS)}",
            "declare action='added', 'replaced' or 'wrapped' (a wrapper receives the original)",
        )
    if target.key in seen:
        raise resolve.ResolveError(
            f"{entry.record.plugin!r} declares {target.key} twice",
            "merge the two into one patch (one wrapper may do both changes)",
        )
    seen.add(target.key)
    return target


def version_gate(entry: Entry) -> Decision | None:
    """``skipped`` with why and the fix when the installed version is outside the declared range
    (no fix when the plugin declared the skip expected), ``None`` when the patch may apply."""
    rec = entry.record
    why = resolve.check_version(rec.distribution, rec.installed, rec.versions)
    if why is None:
        return None
    kind = kind_if_loaded(entry)
    if rec.installed is None:
        fix = f"pip install '{rec.distribution}{rec.versions}'  # only if you use {rec.distribution}"
        return Decision("skipped", why, fix, kind)
    if rec.expected_skip:
        return Decision("skipped", f"expected: {why}", "", kind)
    fix = (
        f"pip install '{rec.distribution}{rec.versions}'  # or a release of {entry.plugin_dist} made "
        f"for {rec.distribution} {rec.installed}: pip install -U {entry.plugin_dist}"
    )
    return Decision("skipped", why, fix, kind)


def check_owner(entry: Entry, top: Entry | None) -> Entry | None:
    """The other plugin's patch this one stacks on (``None``: the target is free); raises when
    another plugin holds the target and ``stacks_on`` does not name it."""
    spec = entry.spec
    assert spec is not None
    if top is None or top.record.plugin == entry.record.plugin:
        return None
    first, second = top.record.plugin, entry.record.plugin
    if spec.stacks_on == first:
        return top
    declared = f" (it declares stacks_on={spec.stacks_on!r})" if spec.stacks_on else ""
    raise resolve.ResolveError(
        f"{entry.key} is already patched by plugin {first!r} ({top.record.action}); plugin {second!r} may "
        f"not patch it too{declared}",
        f"if {second!r}'s patch is meant to go on top of {first!r}'s, declare stacks_on={first!r} in "
        f"its PatchSpec; otherwise activate only one of them (RLPORT_PLUGINS)",
    )


def resolve_target(entry: Entry, module: Any) -> Resolution:
    """Find the owner object in the loaded ``module``, check the attribute exists (or, for
    ``added``, does not), import a lazy replacement."""
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
            f"or 'wrapped' for {here}",
        )
    if spec.action != "added" and not exists:
        raise resolve.ResolveError(
            f"{target.key} does not exist in {here}; nothing to {_VERB[spec.action]}",
            f"pip install -U {entry.plugin_dist}  # a release made for {here}; "
            f"or pin what the patch was written for: pip install '{entry.record.distribution}"
            f"{entry.record.versions}'",
        )
    replacement = (
        resolve.load_lazy(spec.replacement) if isinstance(spec.replacement, str) else spec.replacement
    )
    kind = resolve.kind_of(replacement if spec.action == "added" else current, owner)
    return Resolution(owner, replacement, kind)


def kind_if_loaded(entry: Entry) -> str:
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
