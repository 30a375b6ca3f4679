"""Patches cases, from one fresh subprocess (so nothing of this process leaks in or out): every patch
the active plugins declare applies, verifies, and reverts to the original object; every declared
target exists in the installed version; tiny real Qwen2 and Llama models give the same logits
patched as unpatched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from rlport_conformance.plan import PATCH_MODELS
from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status


def _subprocess(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process; its last stdout line is a JSON object (or
    ``{"error": ...}`` when it printed none)."""
    env = dict(os.environ)
    env.pop("RLPORT_SUMMARY_SHOWN", None)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=240
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"{module} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def patch_run() -> dict[str, Any]:
    """One run of :mod:`rlport_conformance.patch_check` (with every model family) for all patch cases."""
    return _subprocess("rlport_conformance.patch_check", *PATCH_MODELS)


@pytest.mark.rlport_case("patches.roundtrip")
def test_roundtrip(case: CaseContext, rt: Any, patch_run: dict[str, Any]) -> None:
    if "error" in patch_run:
        case.fail(f"the patch check subprocess failed: {patch_run['error']}")
        return
    result = patch_run
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


@pytest.mark.rlport_case("patches.targets")
def test_targets(case: CaseContext, rt: Any, patch_run: dict[str, Any]) -> None:
    """Every declared patch target exists in the installed version of its distribution, where that
    version is inside the patch's declared ``versions`` (an ``added`` target: its parent exists and
    the name is free)."""
    if "error" in patch_run:
        case.fail(f"the patch check subprocess failed: {patch_run['error']}")
        return
    mine = [t for t in patch_run["targets"] if t["plugin"] in rt.active_plugins]
    checked = [t for t in mine if t["in_range"]]
    case.metric(declared=len(mine), checked=[t["target"] for t in checked])
    for t in checked:
        what = (
            "its parent is missing or the name is already taken"
            if t["action"] == "added"
            else "it does not exist"
        )
        case.check(
            t["ok"],
            f"{t['target']} ({t['action']}, plugin {t['plugin']}): {what} in the installed "
            f"{t['distribution']} {t['installed']}, which the patch declares it is right for ({t['versions']})",
        )
    if not checked:
        case.passed("no declared patch applies to an installed version")


@pytest.mark.rlport_case("patches.model_equivalence")
def test_model_equivalence(case: CaseContext, patch_run: dict[str, Any]) -> None:
    """A tiny real transformers model of the family gives, with the plugins' patches applied, the
    logits it gives without them, within the attention tolerance rule against float64, and the same
    parameter gradients (the rule's gradient factor)."""
    from rlport_conformance.tolerance import GRADIENT_K, judge

    if "error" in patch_run:
        case.fail(f"the patch check subprocess failed: {patch_run['error']}")
        return
    equivalence_run = patch_run["equivalence"]
    family = equivalence_run["families"][case.facet["family"]]
    case.metric(applied=equivalence_run["applied"], device=equivalence_run["device"])
    judgement = judge(family["error"], family["reference_error"], family["rounding"])
    if judgement.message:
        applied = ", ".join(equivalence_run["applied"]) or "none"
        judgement = type(judgement)(
            judgement.status,
            judgement.metrics,
            f"patched logits (patches applied: {applied}) differ from the unpatched model's: {judgement.message}",
        )
    case.judge(judgement)
    gradient = judge(
        family["gradient_error"],
        family["gradient_reference_error"],
        family["gradient_rounding"],
        k=GRADIENT_K,
    )
    if gradient.message:
        applied = ", ".join(equivalence_run["applied"]) or "none"
        gradient = type(gradient)(
            gradient.status,
            gradient.metrics,
            f"patched parameter gradients (patches applied: {applied}) differ from the unpatched "
            f"model's: {gradient.message}",
        )
    case.judge(gradient, prefix="gradient_")
