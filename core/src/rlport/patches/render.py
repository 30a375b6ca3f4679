"""The patch section of the startup summary and of ``rlport info``, as a rich renderable.

Grouped like verl_npu's "NPU Patch Summary" (per plugin, per target module, per class, then each
change: attribute, action, kind), and adding what it lacks: the status of every patch (applied,
pending, skipped, skipped as expected, failed, reverted) with the reason for it, the owning
distribution's installed version against the range the patch was written for, and the plugin's
declared why, upstream reference and removal condition. Lines stay readable in an 80-column log::

    Patches: 2 applied · 1 pending · 1 skipped
    plugin demo
      greetlib.core  (greetlib 1.2.0)
        Greeter
          greet     wrapped   method    applied  for greetlib>=1.0,<2
                    why: route greet through the device kernel

:func:`event_line` is the one line reported when pending patches are decided at a later import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from rlport.patches.record import PatchEvent, PatchRecord

_STYLE = {
    "applied": "green",
    "pending": "cyan",
    "skipped": "yellow",
    "skipped as expected": "dim",
    "failed": "bold red",
    "reverted": "dim",
}
_ORDER = ("applied", "pending", "skipped", "skipped as expected", "failed", "reverted")
_ACTION_W, _KIND_W, _STATUS_W = 8, 12, 8


def _bucket(rec: PatchRecord) -> str:
    return "skipped as expected" if rec.is_expected_skip else rec.status


def _counts(records: Sequence[PatchRecord]) -> Text:
    """``3 applied · 1 pending · 1 skipped · 1 failed`` (only the statuses present)."""
    counts = Counter(_bucket(r) for r in records)
    text = Text()
    for bucket in _ORDER:
        if counts[bucket]:
            if text:
                text.append(" · ")
            text.append(f"{counts[bucket]} {bucket}", style=_STYLE[bucket])
    return text


def summary_line(records: Sequence[PatchRecord]) -> Text:
    """``Patches: 3 applied · 1 pending · 1 skipped · 1 failed`` (only the statuses present)."""
    text = Text("Patches: ", style="bold")
    if not records:
        return text.append("none declared by the active plugins")
    return text.append_text(_counts(records))


def event_line(event: PatchEvent) -> Text:
    """One line for pending patches decided at their module's import, ending with the counts now::

    Patches: patchme.late imported, plugin pdemo: 1 applied (compute) · now 3 applied · 1 skipped
    """
    text = Text("Patches: ", style="bold").append(f"{event.module} imported, plugin {event.plugin}: ")
    if event.failed is None:
        names = [r.qualname for r in event.changed if r.status == "applied"]
        text.append(f"{len(names)} applied", style=_STYLE["applied"]).append(f" ({', '.join(names)})")
    else:
        failed = event.failed
        text.append(f"{failed.target} failed", style=_STYLE["failed"]).append(f": {failed.detail}")
        others = [r for r in event.changed if r.status == "skipped" and r.blocked_by == failed.target]
        if others:
            text.append(f" · {len(others)} other patch(es) of {event.plugin} rolled back or not applied")
            text.append(" (all or nothing per plugin)")
        if failed.fix:
            text.append(" · fix: ").append(failed.fix)
    return text.append(" · now ").append_text(_counts(event.records))


def _state(rec: PatchRecord) -> Text:
    """What follows the status: why it is not applied, or the range it was written for."""
    if rec.detail and rec.status != "applied":
        return Text(rec.detail, style=_STYLE[_bucket(rec)])
    text = Text(f"for {rec.distribution}{rec.versions}" if rec.distribution else "")
    if rec.detail:
        text.append(f" · {rec.detail}")
    return text


def _why(rec: PatchRecord) -> Text | None:
    lines = [f"why: {rec.reason}"] if rec.reason else []
    extra = [f"upstream: {rec.upstream}"] if rec.upstream else []
    extra += [f"remove when: {rec.remove_when}"] if rec.remove_when else []
    if extra:
        lines.append(" · ".join(extra))
    return Text("\n".join(lines), style="dim") if lines else None


def _modules_versions(recs: list[PatchRecord]) -> str:
    seen: dict[str, str] = {}
    for rec in recs:
        if rec.distribution and rec.distribution not in seen:
            seen[rec.distribution] = rec.installed or "not installed"
    return ", ".join(f"{d} {v}" for d, v in seen.items())


def _patch_line(name: str, rec: PatchRecord, name_w: int) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=name_w, no_wrap=True)
    grid.add_column(width=_ACTION_W, no_wrap=True)
    grid.add_column(width=_KIND_W, no_wrap=True)
    grid.add_column(width=_STATUS_W, no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row(
        Text(name),
        Text(rec.action),
        Text(rec.kind),
        Text(rec.status, style=_STYLE[_bucket(rec)]),
        _state(rec),
    )
    return grid


def render_table(records: Iterable[PatchRecord]) -> Group:
    """The patch section: a count by status, then per plugin, per target module (with the owning
    distribution's installed version), per class, one line per patch (attribute, action, kind,
    status, and the version range or why it is not applied) followed by its declared why, upstream
    reference and removal condition."""
    records = list(records)
    out: list[RenderableType] = [summary_line(records)]
    rows: list[tuple[str, PatchRecord | None, str]] = []  # (label, record, style) in display order
    plugins: dict[str, list[PatchRecord]] = {}
    for rec in records:
        plugins.setdefault(rec.plugin, []).append(rec)
    for plugin, recs in plugins.items():
        rows.append((f"plugin {plugin}", None, "bold"))
        modules: dict[str, list[PatchRecord]] = {}
        for rec in recs:
            modules.setdefault(rec.module, []).append(rec)
        for module, mrecs in modules.items():
            if module:
                rows.append((f"  {module}  ({_modules_versions(mrecs)})", None, "bold cyan"))
            shown = None
            for rec in mrecs:
                indent = "    "
                if rec.owner:
                    if rec.owner != shown:
                        rows.append((f"    {rec.owner}", None, "cyan"))
                        shown = rec.owner
                    indent = "      "
                else:
                    shown = None
                label = f"{indent}{rec.name}" if module else f"  {rec.target or 'rlport_patches()'}"
                rows.append((label, rec, ""))
    name_w = min(40, max([len(label) for label, rec, _ in rows if rec is not None] or [0]))
    for label, rec, style in rows:
        if rec is None:
            out.append(Text(label, style=style))
            continue
        out.append(_patch_line(label, rec, name_w))
        why = _why(rec)
        if why is not None:
            out.append(Padding(why, (0, 0, 0, name_w + 1), expand=False))
    if any(r.is_problem for r in records):
        out.append(Text("run `rlport doctor` for the fix of each skipped or failed patch", style="dim"))
    return Group(*out)
