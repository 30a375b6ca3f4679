"""Patches case: in a fresh subprocess (so nothing of this process leaks in or out), every patch the
active plugins declare applies, verifies, and reverts to the original object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status


@pytest.mark.rlport_case("patches.roundtrip")
def test_roundtrip(case: CaseContext, rt: Any) -> None:
    env = dict(os.environ)
    env.pop("RLPORT_SUMMARY_SHOWN", None)
    proc = subprocess.run(
        [sys.executable, "-m", "rlport_conformance.patch_check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        case.fail(f"the patch check subprocess exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    patches = result["patches"]
    mine = [p for p in patches if p["plugin"] in rt.active_plugins]
    case.metric(
        declared=len(mine),
        applied=sum(p["status"] == "applied" for p in mine),
        targets=[p["target"] for p in mine],
    )
    for p in mine:
        if p["status"] == "failed":
            case.fail(f"{p['target']} failed to apply: {p['detail']}")
        elif p["status"] == "skipped" and p["installed"] is not None and not p["expected_skip"]:
            case.record(
                Status.COMPATIBILITY_WARNING,
                f"{p['target']} skipped on the installed {p['distribution']} {p['installed']}: {p['detail']}",
            )
        elif p["status"] == "pending":
            case.fail(f"{p['target']} still pending after importing its module: {p['detail']}")
    case.check(
        not result["overwritten"], f"applied patches overwritten before verification: {result['overwritten']}"
    )
    case.check(not result["stuck"], f"patches that could not be reverted: {result['stuck']}")
    case.check(not result["problems"], "; ".join(result["problems"]))
    if not mine:
        case.passed("the plugin declares no patches")
