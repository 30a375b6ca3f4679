"""The report: assembled from a run's events and the plan, summarised into a verdict, sealed with a
sha256 checksum over its canonical JSON (and signed, when asked, by :mod:`rlport_conformance.signing`).

The checksum catches accidental edits only: anyone can recompute it after changing the report. Who
made a report, and that nothing was changed since, is what the Ed25519 signature proves.

Verdict rules (conformance.md): CONFORMANT only when every must-pass case is present exactly once
with an allowed status; NOT_CONFORMANT when any present case has a status that is not allowed (or a
case id appears twice); otherwise INCOMPLETE when a case is missing or the run was filtered with
``-k``. A skipped or deselected case never counts as a pass.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rlport_conformance import plan as plan_mod
from rlport_conformance.status import FAILED, Status, is_allowed

SCHEMA_VERSION = "2"  # 2: "digest" is called "checksum"; "profile"; optional "signature"
CONFORMANT = "CONFORMANT"
NOT_CONFORMANT = "NOT_CONFORMANT"
INCOMPLETE = "INCOMPLETE"


def canonical(obj: Any) -> bytes:
    """The canonical JSON bytes the checksum and the signature are computed over."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


#: Fields outside what the checksum covers.
UNSEALED = ("checksum", "signature")


def checksum(report: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of everything in ``report`` but the checksum and signature."""
    body = {k: v for k, v in report.items() if k not in UNSEALED}
    return hashlib.sha256(canonical(body)).hexdigest()


def result_entry(case: plan_mod.PlannedCase, status: Status, **fields: Any) -> dict[str, Any]:
    return {
        "id": case.id,
        "group": case.group,
        "must_pass": case.must_pass,
        "claimed": case.claimed,
        "status": status.value,
        "metrics": fields.get("metrics") or {},
        "seconds": fields.get("seconds"),
        "message": fields.get("message"),
        "waiver": fields.get("waiver"),
    }


def summarize(
    results: list[dict[str, Any]],
    planned: list[plan_mod.PlannedCase],
    selection: str | None,
    profile: plan_mod.Profile | None = None,
) -> dict[str, Any]:
    """Counts, missing and duplicate ids, not-allowed cases and the verdict, from results alone."""
    by_id = plan_mod.by_id(planned)
    seen = Counter(r["id"] for r in results)
    duplicates = sorted(i for i, n in seen.items() if n > 1)
    present = {r["id"]: r for r in results}
    missing = [
        c.id for c in planned if c.must_pass and (c.id not in present or present[c.id]["status"] == "MISSING")
    ]
    not_allowed = sorted(
        {
            r["id"]
            for r in results
            if r["status"] != Status.MISSING.value
            and (r["id"] not in by_id or by_id[r["id"]].must_pass)
            and not is_allowed(r["status"], claimed=by_id[r["id"]].claimed if r["id"] in by_id else True)
        }
    )
    counts = Counter(r["status"] for r in results)
    groups: dict[str, Counter[str]] = {}
    for r in results:
        groups.setdefault(r["group"], Counter())[r["status"]] += 1
    if not_allowed or duplicates:
        verdict = NOT_CONFORMANT
        reason = f"{len(not_allowed)} case(s) with a status not allowed" + (
            f", {len(duplicates)} duplicated" if duplicates else ""
        )
    elif missing or selection:
        verdict = INCOMPLETE
        reason = f"{len(missing)} must-pass case(s) missing" + (
            f"; the run was filtered with -k {selection!r}, so it cannot certify" if selection else ""
        )
    else:
        verdict = CONFORMANT
        reason = f"all {len(planned)} must-pass cases present once with an allowed status"
    if profile is not None:
        reason += f"; profile {profile.name}"
    return {
        "counts": {s.value: counts.get(s.value, 0) for s in Status},
        "groups": {g: {s.value: c.get(s.value, 0) for s in Status} for g, c in sorted(groups.items())},
        "total": len(results),
        "must_pass": sum(1 for c in planned if c.must_pass),
        "missing": missing,
        "duplicates": duplicates,
        "not_allowed": not_allowed,
        "selection": selection,
        "verdict": verdict,
        "reason": reason,
        "profile": profile.name if profile is not None else None,
    }


def probed(results: Iterable[dict[str, Any]], planned: list[plan_mod.PlannedCase]) -> dict[str, Any]:
    """What the run found to work, per capability (independent of what was declared)."""
    by_id = plan_mod.by_id(planned)
    works = {"PASS", "QUALITY_WARNING", "COMPATIBILITY_WARNING", "WAIVED"}
    ok: dict[str, dict[Any, bool]] = {}
    for r in results:
        case = by_id.get(r["id"])
        if case is None:
            continue
        f = case.facet
        good = r["status"] in works
        keys = []
        if case.kind == "attention.forward":
            keys = [("dtypes", f["dtype"]), ("head_dims", f["head_dim"])]
            if f["layout"] != "mha":
                keys.append(("gqa", True))
            if f["causal"]:
                keys.append(("causal", True))
        elif case.kind in ("attention.varlen", "attention.varlen_qk"):
            keys = [("varlen", True)]
        elif case.kind == "attention.window" or (case.kind == "attention.chunked_prefill" and f["window"]):
            keys = [("sliding_window", True)]
        elif case.kind == "attention.determinism":
            keys = [("deterministic", True)]
        elif case.kind == "collectives.all_reduce_op":
            keys = [("reduce_ops", f["reduce_op"])]
        elif case.kind.startswith("collectives.") and "op" in f:
            keys = [("collectives", f["op"])]
        elif case.kind in ("memory.sleep_frees", "memory.wake_restores"):
            keys = [("sleep_tags", f["tag"])]
        elif case.kind.startswith("rollout."):
            keys = [("rollout_engines", f["engine"])]
        for name, value in keys:
            slot = ok.setdefault(name, {})
            slot[value] = slot.get(value, True) and good
    out: dict[str, Any] = {}
    for name, values in ok.items():
        if set(values) == {True}:
            out[name] = values[True]
        else:
            out[name] = sorted(v for v, good in values.items() if good)
    return out


def build(
    events: list[dict[str, Any]],
    *,
    selection: str | None,
    waivers: Any = None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sealed report from a run's events (see :mod:`rlport_conformance.recorder`).

    The plan is recomputed from the declared capabilities in the session event. A case that started
    but has no result is a CRASH (the process died in it); a must-pass case that skipped itself is a
    FAIL (skipping is never allowed there); a planned case that never ran is MISSING.
    """
    from rlport_conformance import waivers as waivers_mod

    session = next((e for e in events if e.get("event") == "session"), None)
    if session is None:
        fatal = next((e for e in events if e.get("event") == "fatal"), None)
        raise RuntimeError(
            "the conformance run produced no session: "
            + (fatal["error"] if fatal else "the pytest process ended before starting the plugin under test")
        )
    profile = plan_mod.Profile.from_json(session.get("profile"))
    planned = plan_mod.plan(session["capabilities"], profile)
    by_id = plan_mod.by_id(planned)
    results: list[dict[str, Any]] = []
    finished: set[str] = set()
    started: list[str] = []
    skipped: dict[str, str] = {}
    for e in events:
        kind = e.get("event")
        if kind == "start":
            started.append(e["id"])
        elif kind == "skipped":
            skipped[e["id"]] = e.get("reason", "")
            finished.add(e["id"])
        elif kind == "result":
            finished.add(e["id"])
            case = by_id.get(e["id"]) or plan_mod.PlannedCase(e["id"].split("[")[0], must_pass=False)
            entry = result_entry(
                case,
                Status(e["status"]),
                metrics=e.get("metrics"),
                seconds=e.get("seconds"),
                message=e.get("message"),
            )
            if e["id"] not in by_id:
                entry["id"] = e["id"]
            results.append(entry)
    crashed = [i for i in started if i not in finished]
    for case_id in dict.fromkeys(crashed):
        case = by_id.get(case_id)
        if case is not None:
            results.append(result_entry(case, Status.CRASH, message="the test process died during this case"))
    present = {r["id"] for r in results}
    for case in planned:
        if case.id in present:
            continue
        if case.id in skipped and case.must_pass:
            # it ran and skipped itself: a must-pass case may not be skipped (Kubernetes conformance rule)
            message = f"a must-pass case may not be skipped; it skipped itself: {skipped[case.id]}"
            results.append(result_entry(case, Status.FAIL, message=message))
        elif case.id in skipped:
            results.append(result_entry(case, Status.MISSING, message=f"skipped: {skipped[case.id]}"))
        else:
            results.append(
                result_entry(case, Status.MISSING, message="not run (deselected or never reached)")
            )
    order = {c.id: i for i, c in enumerate(planned)}
    results.sort(key=lambda r: order.get(r["id"], len(order)))
    if waivers:
        waivers_mod.apply(waivers, results, session["plugin"], session["environment"])
    performance = [
        {k: e[k] for k in ("id", "value", "unit", "kind", "median_of", "extra") if k in e}
        for e in events
        if e.get("event") == "perf"
    ]
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": session["suite"],
        "plugin": session["plugin"],
        "environment": session["environment"],
        "capabilities": {"declared": session["capabilities"], "probed": probed(results, planned)},
        "results": results,
        "performance": performance,
        "profile": profile.to_json(),
        "summary": summarize(results, planned, selection, profile),
        "run": run or {},
    }
    report["checksum"] = checksum(report)
    return report


def failed_count(counts: dict[str, int]) -> int:
    return sum(counts.get(s.value, 0) for s in FAILED)
