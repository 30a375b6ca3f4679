"""The report model: one :class:`PatchRecord` per declared patch, in the order it was declared.

A record is what the summary, ``rlport info --json`` and ``rlport doctor`` read. It is created when
a plugin's patches are collected and updated as the patch moves through its life:

``pending``  the target's module is not imported yet; the patch applies when it is first imported.
``applied``  the attribute now is the replacement (verified by identity).
``skipped``  not in effect by decision: the owning distribution's version is outside the declared
             range (or it is not installed), or another patch of the same plugin failed, so this one
             was never applied or was rolled back (all-or-nothing per plugin, also when the failure
             came later, at the import of a pending patch's module; ``detail`` says "rolled back
             because <target> failed"). ``expected_skip`` marks a version skip the plugin declared
             as expected (a compatibility patch for other releases): shown, never a problem.
``failed``   could not be applied: the target is missing (or present, for ``added``), the replacement
             could not be imported, the wrapper raised, verification failed, or a second plugin
             tried to patch a target another plugin owns; ``late`` says it failed when its module
             was imported after ``rlport.init()``.
``reverted`` the original was restored by :func:`rlport.patches.revert_all`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["applied", "skipped", "failed", "pending", "reverted"]


@dataclass
class PatchRecord:
    """One declared patch and what happened to it.

    ``target`` is the declared ``module:Attr.sub``; ``module`` and ``qualname`` are its two halves
    and ``owner`` the attribute path of the object patched (``"Greeter"`` for a method, ``""`` for
    a module attribute) with ``name`` the attribute set on it. ``kind`` says what the original (or,
    for ``added``, the replacement) is: ``function``, ``method``, ``staticmethod``, ``classmethod``,
    ``property``, ``class`` or ``attribute``.

    ``reason``, ``upstream`` and ``remove_when`` are the plugin's declared why, upstream reference
    and removal condition. ``detail`` is why the patch has its ``status`` (empty when applied as
    declared) and ``fix`` what to do about a ``skipped``/``failed`` one.

    ``distribution`` owns the target; ``installed`` is its installed version (``None`` when it is
    not installed) and ``versions`` the declared range (packaging specifiers).

    ``blocked_by`` is set on a patch that is ``skipped`` only because another patch of the same
    plugin (that target) failed. ``expected_skip`` is the plugin's declaration that a version skip
    is expected (:attr:`rlport.types.PatchSpec.expected_skip`); ``late`` is set on a patch that was
    pending at ``rlport.init()`` and was decided when its module was imported.
    """

    plugin: str
    target: str
    module: str
    qualname: str
    owner: str
    name: str
    action: str
    kind: str
    status: Status
    reason: str
    distribution: str
    installed: str | None
    versions: str
    upstream: str = ""
    remove_when: str = ""
    stacks_on: str | None = None
    detail: str = ""
    fix: str = ""
    blocked_by: str | None = None
    expected_skip: bool = False
    late: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (only strings and ``None``)."""
        return asdict(self)

    @property
    def is_expected_skip(self) -> bool:
        """Skipped for its version, as the plugin declared it may be (not a problem)."""
        return self.status == "skipped" and self.expected_skip and self.blocked_by is None

    @property
    def is_problem(self) -> bool:
        """Whether a user must act: failed, or skipped because the installed version is outside the
        range. Not: skipped because the distribution is not installed at all (the patch is not
        needed), because a sibling failed (the sibling is the problem), or as the plugin declared
        it expected (``expected_skip``)."""
        if self.status == "failed":
            return True
        return (
            self.status == "skipped"
            and self.blocked_by is None
            and self.installed is not None
            and not self.expected_skip
        )


@dataclass(frozen=True)
class PatchEvent:
    """Pending patches of one plugin decided when ``module`` was imported after ``rlport.init()``.

    ``outcome`` is ``applied`` (all of that plugin's patches of the module are in effect) or
    ``failed`` (``failed`` is the patch that failed; the plugin's other patches were rolled back
    or will not apply: all or nothing per plugin). ``changed`` lists every record the event changed
    (those of other modules rolled back included) and ``records`` every record afterwards.
    """

    module: str
    plugin: str
    outcome: Literal["applied", "failed"]
    changed: tuple[PatchRecord, ...]
    records: tuple[PatchRecord, ...]
    failed: PatchRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON line ``RLPORT_SUMMARY=json`` prints: the event, then every patch's state now."""
        return {
            "patch_event": {
                "module": self.module,
                "plugin": self.plugin,
                "outcome": self.outcome,
                "failed": self.failed.target if self.failed else None,
                "changed": [r.to_dict() for r in self.changed],
            },
            "patches": [r.to_dict() for r in self.records],
        }
