"""The human view of a report: one row per group, the cases that need attention, the performance
figures, and the verdict (rich tables on the terminal)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from rlport_conformance.report import CONFORMANT, INCOMPLETE, failed_count
from rlport_conformance.status import FAILED, Status

VERDICT_STYLE = {CONFORMANT: "bold green", INCOMPLETE: "bold yellow"}
MAX_LISTED = 40
MISSING_LISTED = 10


def groups_table(report: dict[str, Any]) -> Table:
    table = Table(title="rlport conformance: results per group", title_justify="left")
    for column in ("group", "cases", "pass", "not supported", "warnings", "waived", "failed", "missing"):
        table.add_column(column, justify="left" if column == "group" else "right")
    totals = dict.fromkeys(("cases", "pass", "ns", "warn", "waived", "failed", "missing"), 0)
    for group, counts in report["summary"]["groups"].items():
        row = {
            "cases": sum(counts.values()),
            "pass": counts.get("PASS", 0),
            "ns": counts.get("NOT_SUPPORTED", 0),
            "warn": counts.get("QUALITY_WARNING", 0) + counts.get("COMPATIBILITY_WARNING", 0),
            "waived": counts.get("WAIVED", 0),
            "failed": failed_count(counts),
            "missing": counts.get("MISSING", 0),
        }
        for key, value in row.items():
            totals[key] += value
        table.add_row(group, *_cells(row))
    table.add_section()
    table.add_row("all", *_cells(totals), style="bold")
    return table


def _cells(row: dict[str, int]) -> list[str]:
    out = [str(row["cases"]), str(row["pass"]), str(row["ns"]), str(row["warn"]), str(row["waived"])]
    out.append(f"[red]{row['failed']}[/]" if row["failed"] else "0")
    out.append(f"[yellow]{row['missing']}[/]" if row["missing"] else "0")
    return out


def attention_table(report: dict[str, Any]) -> Table | None:
    """Cases not PASS (failures first) with their messages; many MISSING ones folded per group."""
    rows = [r for r in report["results"] if r["status"] not in (Status.PASS.value, Status.MISSING.value)]
    missing = [r for r in report["results"] if r["status"] == Status.MISSING.value]
    if not rows and not missing:
        return None
    order = {s.value: i for i, s in enumerate([*sorted(FAILED, key=str), Status.NOT_SUPPORTED])}
    rows.sort(key=lambda r: (order.get(r["status"], 99), r["id"]))
    table = Table(title="cases that are not PASS", title_justify="left")
    table.add_column("case", overflow="fold")
    table.add_column("status")
    table.add_column("message", overflow="fold")
    failed = {s.value for s in FAILED}
    for r in rows[:MAX_LISTED]:
        style = "red" if r["status"] in failed else "dim"
        message = r.get("message") or ""
        if r.get("waiver"):
            message = f"waived ({r['waiver']['original_status']}): {r['waiver']['issue']}"
        table.add_row(Text(r["id"]), Text(r["status"], style=style), Text(message[:300]))
    if len(rows) > MAX_LISTED:
        table.add_row(f"... and {len(rows) - MAX_LISTED} more (see the JSON report)", "", "")
    if len(missing) <= MISSING_LISTED:
        for r in missing:
            table.add_row(Text(r["id"]), Text("MISSING", style="yellow"), Text(r.get("message") or ""))
    else:
        per_group: dict[str, int] = {}
        for r in missing:
            per_group[r["group"]] = per_group.get(r["group"], 0) + 1
        for group, n in per_group.items():
            table.add_row(Text(f"{group}.* ({n} cases)"), Text("MISSING", style="yellow"), Text("not run"))
    return table


def performance_table(report: dict[str, Any]) -> Table | None:
    if not report.get("performance"):
        return None
    table = Table(title="performance (beside the verdict, never deciding it)", title_justify="left")
    for column in ("measurement", "kind", "value", "unit", "median of"):
        table.add_column(column, justify="right" if column in ("value", "median of") else "left")
    for p in report["performance"]:
        value = p["value"]
        table.add_row(
            Text(p["id"]),
            p["kind"],
            f"{value:.4g}" if isinstance(value, (int, float)) else str(value),
            p["unit"],
            str(p["median_of"]),
        )
    return table


def verdict_text(report: dict[str, Any]) -> Text:
    s = report["summary"]
    plugin = report["plugin"]
    text = Text()
    text.append("verdict: ")
    text.append(s["verdict"], style=VERDICT_STYLE.get(s["verdict"], "bold red"))
    text.append(f"  ({s['reason']})\n")
    if report.get("profile"):
        text.append(f"profile certified: {report['profile']['name']}\n")
    if report.get("signature"):
        text.append(f"signed by key {report['signature'].get('key_fingerprint')}\n")
    text.append(
        f"plugin {plugin['name']} ({plugin.get('distribution')} {plugin.get('version')}) on "
        f"{report['environment'].get('device')}; suite {report['suite']['version']} "
        f"@ {report['suite']['revision']}"
    )
    if s.get("selection"):
        text.append(
            f"\nfiltered with -k {s['selection']!r}: a filtered run is never CONFORMANT", style="yellow"
        )
    return text


def render(report: dict[str, Any]) -> Group:
    parts: list[Any] = [groups_table(report)]
    for extra in (attention_table(report), performance_table(report)):
        if extra is not None:
            parts.append(extra)
    parts.append(verdict_text(report))
    return Group(*parts)


def show(report: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or CI: wide enough that case ids are not cut
            console = Console(width=120)
    console.print(render(report))
