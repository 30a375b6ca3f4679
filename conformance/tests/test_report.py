"""Report assembly from events: missing, crashed, skipped and filtered runs never come out CONFORMANT;
waivers need an issue link; the checksum covers everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlport.errors import ConfigError
from rlport.types import Capabilities
from rlport_conformance import report as report_mod
from rlport_conformance import waivers as waivers_mod
from rlport_conformance.plan import capabilities_to_dict, plan
from rlport_conformance.verify import problems

DECLARED = capabilities_to_dict(Capabilities(dtypes=("float32",), head_dims=(64,)))
PLAN = plan(DECLARED)


def _events(
    statuses: dict[str, str] | None = None, *, drop: tuple[str, ...] = (), crash: str | None = None
) -> list[dict]:
    statuses = statuses or {}
    events = [
        {
            "event": "session",
            "suite": {"name": "rlport-conformance", "version": "0.1.0", "revision": "x"},
            "plugin": {"name": "cpu"},
            "environment": {"device_type": "cpu", "device": "x86_64"},
            "capabilities": DECLARED,
            "plan": [c.id for c in PLAN],
        }
    ]
    for case in PLAN:
        if case.id in drop:
            continue
        events.append({"event": "start", "id": case.id})
        if case.id == crash:
            continue
        default = "PASS" if case.claimed else "NOT_SUPPORTED"
        events.append(
            {"event": "result", "id": case.id, "status": statuses.get(case.id, default), "metrics": {}}
        )
    return events


def test_all_allowed_is_conformant_and_verifies() -> None:
    report = report_mod.build(_events(), selection=None)
    assert report["summary"]["verdict"] == "CONFORMANT"
    assert problems(report) == []


def test_missing_case_is_incomplete() -> None:
    report = report_mod.build(_events(drop=("platform.tensor",)), selection=None)
    assert report["summary"]["verdict"] == "INCOMPLETE"
    assert report["summary"]["missing"] == ["platform.tensor"]
    assert "must-pass case platform.tensor is MISSING: not run (deselected or never reached)" in problems(
        report
    )


def test_crash_mid_case_is_crash() -> None:
    report = report_mod.build(_events(crash="platform.probe"), selection=None)
    entry = next(r for r in report["results"] if r["id"] == "platform.probe")
    assert entry["status"] == "CRASH"
    assert report["summary"]["verdict"] == "NOT_CONFORMANT"


def test_not_supported_on_a_claim_fails() -> None:
    report = report_mod.build(
        _events({"attention.forward[float32-d64-causal-mha]": "NOT_SUPPORTED"}), selection=None
    )
    assert report["summary"]["not_allowed"] == ["attention.forward[float32-d64-causal-mha]"]
    assert any("(NOT_SUPPORTED for a claimed capability)" in p for p in problems(report))


def test_filtered_run_is_incomplete_even_when_everything_ran() -> None:
    report = report_mod.build(_events(), selection="attention")
    assert report["summary"]["verdict"] == "INCOMPLETE"


def test_no_session_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no session"):
        report_mod.build([{"event": "fatal", "error": "SelectionError: nope"}], selection=None)


def test_waiver_needs_device_and_issue(tmp_path: Path) -> None:
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps([{"device": "cpu", "case": "platform.*", "issue": "TODO"}]))
    with pytest.raises(ConfigError, match="not a URL"):
        waivers_mod.load(bad)
    good = tmp_path / "w.yaml"
    good.write_text(
        "waivers:\n  - device: cpu\n    case: platform.t*\n    issue: https://example.org/issues/1\n"
    )
    waivers = waivers_mod.load(good)
    report = report_mod.build(
        _events({"platform.tensor": "FAIL", "platform.probe": "FAIL"}), selection=None, waivers=waivers
    )
    statuses = {r["id"]: r["status"] for r in report["results"]}
    assert statuses["platform.tensor"] == "WAIVED" and statuses["platform.probe"] == "FAIL"
    other_device = [waivers_mod.Waiver("cuda*", "platform.*", "https://example.org/issues/2")]
    report = report_mod.build(_events({"platform.tensor": "FAIL"}), selection=None, waivers=other_device)
    assert report["summary"]["verdict"] == "NOT_CONFORMANT"


def test_checksum_covers_every_field() -> None:
    report = report_mod.build(_events(), selection=None)
    for key in ("environment", "capabilities", "performance", "run"):
        tampered = json.loads(json.dumps(report))
        tampered[key] = {"changed": True}
        assert report_mod.checksum(tampered) != report["checksum"]


def test_exceptions_are_classified() -> None:
    import sys

    from rlport_conformance.plugin import classify

    def raise_and_classify(error: BaseException) -> tuple[str, str]:
        try:
            raise error
        except BaseException:
            status, message = classify(error, sys.exc_info()[2])
        return status.value, message

    assert raise_and_classify(pytest.fail.Exception("Timeout >3s from pytest-timeout."))[0] == "TIMEOUT"
    assert raise_and_classify(MemoryError())[0] == "RESOURCE_ERROR"
    assert raise_and_classify(AssertionError("x"))[0] == "FAIL"
    # raised here, outside the suite's package: the plugin's fault
    status, message = raise_and_classify(ValueError("bad kernel"))
    assert status == "FAIL" and message.startswith("ValueError: bad kernel (raised in ")


def test_pytest_plugin_is_light_and_inert() -> None:
    import subprocess
    import sys

    code = "import sys, rlport_conformance.plugin; print('torch' in sys.modules, 'rlport.runtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
