"""Declarative patches of third-party code: applied, version-gated, conflict-checked, verified,
reported and reverted by the core.

A plugin returns :class:`rlport.types.PatchSpec` values from its ``rlport_patches`` hook;
``rlport.init()`` hands them to the process's :class:`PatchManager`::

    from rlport.patches import get_manager, revert_all, render_table
    mgr = get_manager()
    mgr.apply_from_plugins(pm, ["cpu", "myfabric"])   # -> list[PatchRecord]
    mgr.render(console)                                # the summary's patch section
    mgr.problems()                                     # [(finding, fix)] for `rlport doctor`
    mgr.set_reporter(print)                            # PatchEvent when pending patches apply/fail
    mgr.import_targets()                               # decide every pending patch now
    revert_all()                                       # originals back, identity for identity

See docs/patches.md for how to declare a patch and how to read the summary.
"""

from __future__ import annotations

from rlport.patches.manager import PatchManager, get_manager, revert_all
from rlport.patches.record import PatchEvent, PatchRecord, Status
from rlport.patches.render import event_line, render_table, summary_line

__all__ = [
    "PatchEvent",
    "PatchManager",
    "PatchRecord",
    "Status",
    "event_line",
    "get_manager",
    "render_table",
    "revert_all",
    "summary_line",
]
