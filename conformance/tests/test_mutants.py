"""The suite can fail: every deliberately broken plugin is rejected, naming the case its defect
breaks (and not the cases it leaves intact)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_suite
from mutants import MUTANTS, Mutant, build


def _status(report: dict, case_id: str) -> str:
    matches = [r["status"] for r in report["results"] if r["id"] == case_id]
    assert len(matches) == 1, f"{case_id} appears {len(matches)} times in the report"
    return matches[0]


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.defect for m in MUTANTS])
def test_mutant_is_rejected(mutant: Mutant, tmp_path: Path) -> None:
    report = run_suite(mutant.plugin, mutant.keyword, pythonpath=build(tmp_path / "dist", mutant.defect))
    summary = report["summary"]
    assert report["plugin"]["name"] == mutant.plugin
    assert report["plugin"]["distribution"] == f"rlport-mutant-{mutant.defect.replace('_', '-')}"
    assert summary["verdict"] == mutant.verdict, summary["reason"]
    for case_id in mutant.must_fail:
        assert case_id in summary["not_allowed"], (
            f"{case_id} is {_status(report, case_id)}, expected a failure"
        )
    for case_id in mutant.must_pass:
        assert _status(report, case_id) in ("PASS", "QUALITY_WARNING", "COMPATIBILITY_WARNING")


def test_crash_is_one_case_not_the_run(tmp_path: Path) -> None:
    """A kernel that aborts the process gives CRASH for the cases it ran in; the run restarts and the
    remaining cases still get their results."""
    mutant = next(m for m in MUTANTS if m.defect == "crash_bf16")
    report = run_suite(mutant.plugin, mutant.keyword, pythonpath=build(tmp_path / "dist", mutant.defect))
    assert {_status(report, c) for c in mutant.must_fail} == {"CRASH"}
    assert report["run"]["restarts_after_crash"] == 2
    assert report["run"]["pytest_exit_codes"][0] < 0


def test_skipped_must_pass_case_fails_never_passes(tmp_path: Path) -> None:
    mutant = next(m for m in MUTANTS if m.defect == "skip_case")
    report = run_suite(mutant.plugin, mutant.keyword, pythonpath=build(tmp_path / "dist", mutant.defect))
    skipped = "attention.forward[bfloat16-d64-causal-mha]"
    entry = next(r for r in report["results"] if r["id"] == skipped)
    assert entry["status"] == "FAIL"
    assert (
        entry["message"]
        == "a must-pass case may not be skipped; it skipped itself: mutant: bfloat16 is not today"
    )
    assert report["summary"]["verdict"] == "NOT_CONFORMANT"
    assert report["summary"]["counts"]["PASS"] >= 2  # the float32 cases of the same selection ran


def test_hang_is_a_timeout(tmp_path: Path) -> None:
    """A kernel that never returns is stopped at the per-case limit and reported TIMEOUT."""
    report = run_suite(
        "mutant_hang_bf16",
        "attention.forward and bfloat16 and d64 and causal and mha",
        pythonpath=build(tmp_path / "dist", "hang_bf16"),
        case_timeout=3.0,
    )
    entry = next(r for r in report["results"] if r["id"] == "attention.forward[bfloat16-d64-causal-mha]")
    assert entry["status"] == "TIMEOUT"
    # pytest-timeout's own words, recorded verbatim: "call: Failed: Timeout (>3.0s) from pytest-timeout."
    assert entry["message"].startswith("call: Failed: Timeout") and "pytest-timeout" in entry["message"]
    assert report["summary"]["verdict"] == "NOT_CONFORMANT"


def test_probe_the_reference_answered_is_not_credited(tmp_path: Path) -> None:
    """The mutants leave sliding windows (unclaimed) to the reference, which computes them right:
    the probe is NOT_SUPPORTED, never a COMPATIBILITY_WARNING credited to the plugin."""
    report = run_suite(
        "mutant_bf16_deferred",
        "attention.window and float32",
        pythonpath=build(tmp_path / "dist", "bf16_deferred"),
    )
    entry = next(r for r in report["results"] if r["id"] == "attention.window[float32-d64-w16]")
    assert entry["status"] == "NOT_SUPPORTED"
    assert entry["metrics"]["answered_by"] == "reference"
    assert entry["message"] == "not claimed, and the plugin deferred it to the reference"


def test_failing_generated_case_reports_a_shrunk_example_that_replays(tmp_path: Path) -> None:
    """A generated case that fails reports the first failing example and, shrunk by Hypothesis
    within its budget, a smaller one failing the same way; replay() of each fails on the mutant."""
    import json
    import os
    import subprocess
    import sys

    from rlport_conformance import generated as gen

    case_id = "attention.gradient[float32-dense]"
    root = build(tmp_path / "dist", "grad_ignores_scale")
    report = run_suite(
        "mutant_grad_ignores_scale", "attention.gradient and float32 and dense", pythonpath=root
    )
    entry = next(r for r in report["results"] if r["id"] == case_id)
    assert entry["status"] == "FAIL"
    metrics = entry["metrics"]
    first, shrunk = metrics["example"], metrics["shrunk_example"]
    assert 0 < metrics["shrink_calls"] <= gen.SHRINK_CALLS
    assert json.dumps(shrunk, sort_keys=True) in entry["message"]

    def size(ex: dict) -> int:
        return ex["batch"] * ex["heads"] * ex["q_len"] * ex["k_len"] * ex["head_dim"]

    assert size(shrunk) < size(first)
    assert shrunk["scale"] is not None  # the defect needs an explicit scale: the shrink keeps one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys; from rlport_conformance.generated import replay; "
        "print(replay(sys.argv[1], sys.argv[2], plugin='mutant_grad_ignores_scale').status.name)"
    )
    for ex in (first, shrunk):
        done = subprocess.run(
            [sys.executable, "-c", code, case_id, json.dumps(ex)], capture_output=True, text=True, env=env
        )
        assert done.stdout.strip().splitlines()[-1] == "FAIL", done.stderr[-2000:]
