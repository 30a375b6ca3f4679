"""``verify REPORT``: re-check a report someone sent you, trusting nothing in it but the declared
capabilities.

It recomputes the checksum (which anyone can recompute after an edit: it catches accidents, the
signature proves origin; see :mod:`rlport_conformance.signing`), recomputes the must-pass plan from the declared capabilities, and checks
that every planned case is present exactly once with a valid status, that flags and waivers are
consistent with the plan, that the summary's counts, missing list and verdict follow from the
results, and that the verdict is CONFORMANT. Each problem is named; any problem means exit 1.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import rlport_conformance
from rlport_conformance import plan as plan_mod
from rlport_conformance import report as report_mod
from rlport_conformance.status import VALID, Status, is_allowed


def problems(report: dict[str, Any]) -> list[str]:
    """Everything wrong with ``report`` as a certification (empty: a valid CONFORMANT report)."""
    found: list[str] = []
    for key in (
        "schema_version",
        "suite",
        "plugin",
        "environment",
        "capabilities",
        "results",
        "summary",
        "checksum",
    ):
        if key not in report:
            found.append(f"the report has no {key!r} field")
    if found:
        return found
    if report["schema_version"] != report_mod.SCHEMA_VERSION:
        found.append(f"schema_version {report['schema_version']!r} is not {report_mod.SCHEMA_VERSION!r}")
    actual = report_mod.checksum(report)
    if actual != report["checksum"]:
        found.append(
            f"checksum mismatch: the report says {report['checksum'][:16]}..., its content hashes to "
            f"{actual[:16]}... (the report was changed after it was written)"
        )
    suite = report["suite"]
    if suite.get("name") != rlport_conformance.SUITE_NAME:
        found.append(f"suite {suite.get('name')!r} is not {rlport_conformance.SUITE_NAME!r}")
    if suite.get("version") != rlport_conformance.__version__:
        found.append(
            f"the report was made by {rlport_conformance.SUITE_NAME} {suite.get('version')}, this verifier is "
            f"{rlport_conformance.__version__}: verify with the same version "
            f"(pip install {rlport_conformance.SUITE_NAME}=={suite.get('version')})"
        )
    if "profile" not in report:
        found.append("the report has no 'profile' field: which profile it certifies is unknown")
        return found
    try:
        profile = plan_mod.Profile.from_json(report["profile"])
    except (TypeError, ValueError) as exc:
        found.append(f"the report's profile {report['profile']!r} is not valid: {exc}")
        return found
    if report["profile"].get("name") != profile.name:
        found.append(
            f"the report names profile {report['profile'].get('name')!r}, its world sizes make it {profile.name!r}"
        )
    planned = plan_mod.plan(report["capabilities"].get("declared", {}), profile)
    by_id = plan_mod.by_id(planned)
    results = report["results"]
    seen = Counter(r.get("id") for r in results)
    for case_id, n in sorted(seen.items()):
        if n > 1:
            found.append(f"case {case_id} appears {n} times (duplicate results)")
    for case in planned:
        if case.must_pass and seen.get(case.id, 0) == 0:
            found.append(
                f"must-pass case {case.id} has no result at all (the plan from the declared "
                "capabilities requires it)"
            )
    for r in results:
        case_id, status = r.get("id"), r.get("status")
        if status not in VALID:
            found.append(f"case {case_id} has status {status!r}, not one of {sorted(VALID)}")
            continue
        case = by_id.get(case_id)
        if case is None:
            if r.get("must_pass"):
                found.append(f"case {case_id} is marked must-pass but is not in the plan")
            continue
        if r.get("must_pass") != case.must_pass or r.get("claimed") != case.claimed:
            found.append(
                f"case {case_id} says must_pass={r.get('must_pass')}, claimed={r.get('claimed')}; the plan "
                f"says must_pass={case.must_pass}, claimed={case.claimed}"
            )
        if status == Status.MISSING.value:
            found.append(f"must-pass case {case_id} is MISSING: {r.get('message') or 'not run'}")
        elif not is_allowed(status, claimed=case.claimed):
            why = " (NOT_SUPPORTED for a claimed capability)" if status == "NOT_SUPPORTED" else ""
            found.append(f"case {case_id} is {status}{why}: {r.get('message') or ''}".rstrip(": "))
        if status == Status.WAIVED.value:
            w = r.get("waiver") or {}
            if not str(w.get("issue", "")).startswith(("http://", "https://")) or not w.get(
                "original_status"
            ):
                found.append(f"case {case_id} is WAIVED without an issue link and original status")
    recomputed = report_mod.summarize(results, planned, report["summary"].get("selection"), profile)
    summary = report["summary"]
    for key in ("counts", "missing", "duplicates", "not_allowed", "verdict", "profile"):
        if summary.get(key) != recomputed[key]:
            found.append(f"summary.{key} is {summary.get(key)!r} but the results give {recomputed[key]!r}")
    if recomputed["verdict"] != report_mod.CONFORMANT:
        found.append(f"verdict {recomputed['verdict']}: {recomputed['reason']}")
    return found


def verify_file(path: Path | str) -> tuple[dict[str, Any] | None, list[str]]:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return None, [f"cannot read {str(path)!r} as JSON: {exc}"]
    if not isinstance(report, dict):
        return None, [f"{str(path)!r} holds {type(report).__name__}, not a report object"]
    return report, problems(report)
