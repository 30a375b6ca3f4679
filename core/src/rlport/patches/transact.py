"""The transactions: applying a planned patch, checking that applied patches are still in effect,
and reverting them, most recent first.

Nothing here decides or marks a status: planning (:mod:`rlport.patches.plan`) decided, and the
manager marks each entry with what happened. These functions change third-party attributes (through
:mod:`rlport.patches.ops`) and the entries' ``applied`` handles, and say what they could not do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rlport.patches import ops, resolve
from rlport.patches.plan import Entry


def apply(entry: Entry, seq: int) -> None:
    """Store ``entry``'s resolved replacement (wrapping the current value for ``wrapped``) and
    verify it by identity; raises :class:`~rlport.patches.resolve.ResolveError`, changing nothing."""
    spec, target, resolution = entry.spec, entry.target, entry.resolution
    assert spec is not None and target is not None and resolution is not None
    _, current = resolve.raw_attribute(resolution.owner, target.name)
    new = ops.replacement_for(
        spec.action, current if spec.action != "added" else None, resolution.replacement
    )
    entry.applied = ops.set_attribute(resolution.owner, target.name, new)
    entry.seq = seq


def applied_detail(entry: Entry) -> str:
    """What the summary says after an applied patch's range: how it stacked, if it did."""
    spec = entry.spec
    if entry.below is not None:
        return f"stacked on plugin {entry.below.record.plugin!r}'s patch"
    if spec is not None and spec.stacks_on:
        return f"stacks_on={spec.stacks_on!r}, which did not patch it; applied to the original"
    return ""


def undo(entries: Iterable[Entry]) -> list[tuple[Entry, resolve.ResolveError | None]]:
    """Restore the original of each applied entry, most recent first.

    Returns every entry with ``None`` when its original is back, or the error when it could not be
    restored (other code replaced rlport's value since: it is left as it is).
    """
    done: list[tuple[Entry, resolve.ResolveError | None]] = []
    for entry in sorted(entries, key=lambda e: -e.seq):
        assert entry.applied is not None
        try:
            ops.restore(entry.applied)
        except resolve.ResolveError as error:
            done.append((entry, error))
            continue
        done.append((entry, None))
    return done


def overwritten(entries: Iterable[Entry]) -> list[tuple[Entry, Any]]:
    """Applied entries whose attribute other code has replaced since, each with the value now."""
    out = []
    for entry in entries:
        if entry.applied is not None and not ops.is_current(entry.applied):
            out.append((entry, resolve.own_attribute(entry.applied.owner, entry.applied.name)[1]))
    return out
