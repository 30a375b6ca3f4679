"""The built-in CPU plugin is CONFORMANT, its report verifies, and tampering with it does not."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_suite

from rlport_conformance import cli
from rlport_conformance import report as report_mod
from rlport_conformance.verify import problems


@pytest.fixture
def cpu_report(cpu_run: tuple[Path, int, float]) -> dict:
    return json.loads(cpu_run[0].read_text())


def test_cpu_plugin_is_conformant(cpu_run: tuple[Path, int, float], cpu_report: dict) -> None:
    _path, code, seconds = cpu_run
    summary = cpu_report["summary"]
    assert summary["verdict"] == "CONFORMANT", summary
    assert code == 0
    assert summary["missing"] == [] and summary["duplicates"] == [] and summary["not_allowed"] == []
    assert summary["total"] == summary["must_pass"] == len(cpu_report["results"])
    assert set(summary["groups"]) == {
        "platform",
        "attention",
        "collectives",
        "memory",
        "rollout",
        "patches",
        "training",
        "weights",
    }
    assert cpu_report["plugin"]["name"] == "cpu" and cpu_report["plugin"]["distribution"] == "rlport"
    kinds = {p["kind"] for p in cpu_report["performance"]}
    assert {"tflops", "algbw", "busbw", "sleep_seconds", "wake_seconds", "output_tokens_per_second"} <= kinds
    assert seconds < 600


def test_cpu_report_verifies(cpu_run: tuple[Path, int, float], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(cpu_run[0])]) == 0
    assert "valid" in capsys.readouterr().out


def test_junit_matches_the_report(cpu_run: tuple[Path, int, float], cpu_report: dict) -> None:
    root = ET.parse(cpu_run[0].with_suffix(".xml")).getroot()
    assert root.get("verdict") == "CONFORMANT"
    cases = root.findall(".//testcase")
    assert len(cases) == len(cpu_report["results"])
    assert not root.findall(".//failure") and not root.findall(".//error")


def test_editing_one_result_fails_verify(
    tmp_path: Path, cpu_report: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    edited = copy.deepcopy(cpu_report)
    target = next(r for r in edited["results"] if r["id"] == "attention.forward[float32-d64-causal-mha]")
    target["metrics"]["error"] = 0.0  # a "better" number
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edited))
    assert cli.main(["verify", str(path)]) == 1
    assert "checksum mismatch" in capsys.readouterr().out


def test_forged_checksum_still_fails_verify(cpu_report: dict) -> None:
    """Turn a PASS into a FAIL and re-seal: the verdict no longer follows from the results."""
    forged = copy.deepcopy(cpu_report)
    forged["results"][0]["status"] = "FAIL"
    forged["checksum"] = report_mod.checksum(forged)
    found = problems(forged)
    assert not any("checksum" in p for p in found)
    assert any(p.startswith(f"case {forged['results'][0]['id']} is FAIL") for p in found)
    assert any(p.startswith("summary.counts") for p in found)
    assert any(p.startswith("summary.verdict") for p in found)


def test_duplicate_result_fails_verify(cpu_report: dict) -> None:
    doubled = copy.deepcopy(cpu_report)
    doubled["results"].append(copy.deepcopy(doubled["results"][3]))
    doubled["checksum"] = report_mod.checksum(doubled)
    found = problems(doubled)
    assert f"case {doubled['results'][3]['id']} appears 2 times (duplicate results)" in found


def test_dropped_result_fails_verify(cpu_report: dict) -> None:
    dropped = copy.deepcopy(cpu_report)
    gone = dropped["results"].pop(7)
    dropped["summary"] = report_mod.summarize(dropped["results"], [], None) | {"verdict": "CONFORMANT"}
    dropped["checksum"] = report_mod.checksum(dropped)
    found = problems(dropped)
    assert any(p.startswith(f"must-pass case {gone['id']} has no result at all") for p in found)


def test_deselected_cases_make_the_run_incomplete() -> None:
    report = run_suite("cpu", "platform.probe or platform.tensor")
    summary = report["summary"]
    assert summary["verdict"] == "INCOMPLETE"
    assert "filtered with -k" in summary["reason"]
    assert {r["id"]: r["status"] for r in report["results"] if r["status"] != "MISSING"} == {
        "platform.probe": "PASS",
        "platform.probe_isolated": "PASS",  # -k matches substrings
        "platform.tensor": "PASS",
    }
    assert "attention.forward[float32-d64-causal-mha]" in summary["missing"]
    assert problems(report)[-1].startswith("verdict INCOMPLETE")
