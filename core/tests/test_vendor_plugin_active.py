"""Every listing, summary and error path with a vendor-style device plugin active (not cpu), whose
text is hostile to rich markup; probe-time environment and findings; the ``rlport_doctor`` hook."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from plugin_sources import device
from test_cli_and_summary import rlport_cli, run

from rlport.testing import make_plugin

# Text a plugin may legitimately say, that rich would read as markup: a reason with square
# brackets, a closing tag, a style name. It must come out verbatim, and never crash.
HOSTILE = "driver [red]550[/red] ok; [/] see [bold]docs[/bold] [link=x]here[/link] [[x]]"
SHORT = "[red]x[/] [/] [b]"  # fits one table cell unfolded


def _vendor(site: Path, *, body: str = "", reason: str = HOSTILE, available: bool = True) -> None:
    make_plugin(site, "vendor", device("vendor", priority=150, reason=reason, available=available, body=body))


def test_plugins_table_and_json_with_a_vendor_plugin_active(tmp_path: Path) -> None:
    _vendor(tmp_path, reason=SHORT)
    table = rlport_cli("plugins", extra_path=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "vendor" in table.stdout and "active" in table.stdout and "available" in table.stdout
    assert SHORT in table.stdout  # verbatim, brackets and all
    listed = {
        p["name"]: p
        for p in json.loads(rlport_cli("plugins", "--json", extra_path=tmp_path).stdout)["plugins"]
    }
    assert listed["vendor"]["status"] == "active" and listed["vendor"]["reason"] == SHORT
    assert listed["cpu"]["status"] == "available"


def test_info_and_summary_show_plugin_text_verbatim(tmp_path: Path) -> None:
    _vendor(tmp_path)
    info = rlport_cli("info", extra_path=tmp_path)
    assert info.returncode == 0, info.stderr
    assert " ".join(HOSTILE.split()) in " ".join(info.stdout.split())
    code = "import rlport; rlport.init()"
    summary = run([sys.executable, "-c", code], extra_path=tmp_path, RLPORT_SUMMARY="1")
    assert summary.returncode == 0, summary.stderr
    assert "device plugin: vendor" in summary.stderr
    assert " ".join(HOSTILE.split()) in " ".join(summary.stderr.split())


def test_an_unavailable_vendor_plugin_is_listed_with_its_reason_and_cpu_runs(tmp_path: Path) -> None:
    _vendor(tmp_path, available=False, reason="none [/] [b]x[/b]")
    result = rlport_cli("plugins", "--json", extra_path=tmp_path)
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["vendor"]["status"] == "unavailable"
    assert listed["vendor"]["reason"] == "none [/] [b]x[/b]"
    assert listed["cpu"]["status"] == "active"
    table = rlport_cli("plugins", extra_path=tmp_path)
    assert table.returncode == 0 and "none [/] [b]x[/b]" in table.stdout


def test_an_error_naming_plugin_text_is_printed_verbatim(tmp_path: Path) -> None:
    _vendor(tmp_path, available=False, reason="needs [red]x[/] [/]")
    result = rlport_cli("info", extra_path=tmp_path, RLPORT_DEVICE="vendor")
    assert result.returncode == 2
    assert "needs [red]x[/] [/]" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


PROBE_ENV = """
    @rlport.hookimpl
    def rlport_doctor(self, device):
        from rlport.types import Finding
        return [Finding("vendor", f"VENDOR_MODE is {__import__('os').environ.get('VENDOR_MODE')!r} [/]", "unset VENDOR_MODE")]
"""


def _probe_source(name: str, env: str, findings: str, available: bool = False) -> str:
    return f'''
import rlport
from rlport.types import Finding, Manifest, ProbeResult


class Plugin:
    rlport_manifest = Manifest(name="{name}", kind="device", hook_api=">=1.0,<2")

    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available={available}, reason="vendor runtime missing", priority=120,
                           env={env}, findings={findings})


plugin = Plugin()
'''


def test_probe_env_is_exported_before_torch_even_when_unavailable(tmp_path: Path) -> None:
    make_plugin(tmp_path, "pre", _probe_source("pre", '{"RLPORT_TEST_PRE_TORCH": "0"}', "()"))
    code = (
        "import os, sys, rlport; rt = rlport.init(); "
        "print(os.environ.get('RLPORT_TEST_PRE_TORCH'), rt.device_plugin)"
    )
    result = run([sys.executable, "-c", code], extra_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "cpu"]
    # the user's own value wins
    kept = run([sys.executable, "-c", code], extra_path=tmp_path, RLPORT_TEST_PRE_TORCH="1")
    assert kept.stdout.split() == ["1", "cpu"]


def test_probe_env_is_set_before_rlport_imports_torch(tmp_path: Path) -> None:
    """The core's own torch import comes after the probe's environment is in place."""
    make_plugin(tmp_path, "pre", _probe_source("pre", '{"RLPORT_TEST_PRE_TORCH": "0"}', "()"))
    sitecustom = tmp_path / "sitecustomize.py"
    sitecustom.write_text(
        "import builtins, os\n"
        "_real = builtins.__import__\n"
        "def _guard(name, *a, **k):\n"
        "    if name == 'torch' and os.environ.get('RLPORT_TEST_PRE_TORCH') != '0':\n"
        "        raise ImportError('torch imported before the probe env was set')\n"
        "    return _real(name, *a, **k)\n"
        "builtins.__import__ = _guard\n"
    )
    result = run([sys.executable, "-c", "import rlport; rlport.init()"], extra_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_probe_findings_are_doctor_problems_even_when_unavailable(tmp_path: Path) -> None:
    findings = '(Finding("vendor", "import torch is broken in every program [/]", "source set_env.sh"),)'
    make_plugin(tmp_path, "pre", _probe_source("pre", "{}", findings))
    result = rlport_cli("doctor", extra_path=tmp_path)
    assert result.returncode == 1
    assert "import torch is broken in every program [/]" in result.stdout
    assert "fix: source set_env.sh" in result.stdout
    listed = {
        p["name"]: p
        for p in json.loads(rlport_cli("plugins", "--json", extra_path=tmp_path).stdout)["plugins"]
    }
    assert listed["pre"]["findings"][0]["fix"] == "source set_env.sh"


def test_a_probe_returning_bad_env_marks_the_plugin_broken(tmp_path: Path) -> None:
    make_plugin(tmp_path, "pre", _probe_source("pre", '{"X": 1}', "()"))
    listed = {
        p["name"]: p
        for p in json.loads(rlport_cli("plugins", "--json", extra_path=tmp_path).stdout)["plugins"]
    }
    assert listed["pre"]["status"] == "broken" and "expected str -> str" in listed["pre"]["reason"]


def test_doctor_hook_of_the_active_plugin_is_reported(tmp_path: Path) -> None:
    _vendor(tmp_path, body=PROBE_ENV, reason="ok")
    result = rlport_cli("doctor", extra_path=tmp_path, VENDOR_MODE="legacy")
    assert result.returncode == 1
    assert "VENDOR_MODE is 'legacy' [/]" in result.stdout and "fix: unset VENDOR_MODE" in result.stdout
    info = json.loads(rlport_cli("info", "--json", extra_path=tmp_path).stdout)
    served = {h["hook"]: h["served_by"] for h in info["hooks"]}
    assert served["rlport_doctor"] == "vendor"


def test_a_doctor_hook_that_raises_is_itself_a_finding(tmp_path: Path) -> None:
    body = """
    @rlport.hookimpl
    def rlport_doctor(self, device):
        raise RuntimeError("boom")
"""
    _vendor(tmp_path, body=body, reason="ok")
    result = rlport_cli("doctor", extra_path=tmp_path)
    assert result.returncode == 1
    assert "rlport_doctor of plugin 'vendor' raised RuntimeError: boom" in " ".join(result.stdout.split())


DEFERRING_OPTIMIZER = """
    @rlport.hookimpl
    def rlport_optimizer(self, name, device, strategy):
        return None  # no fused kernel of its own: the reference answers
"""


def test_summary_does_not_credit_a_first_answer_hook_to_a_plugin_before_it_answers(tmp_path: Path) -> None:
    """The optimizer is resolved in each training process, after the summary: until then the
    vendor plugin is only the first one asked (it may defer); once resolved, the summary names
    the plugin that really answered."""
    _vendor(tmp_path, body=DEFERRING_OPTIMIZER, reason="ok")
    code = (
        "import json, rlport\n"
        "from rlport.summary import collect, render\n"
        "from rlport.console import make_console\n"
        "rt = rlport.init()\n"
        "before = {h['hook']: h for h in collect(rt)['hooks']}['rlport_optimizer']\n"
        "make_console().print(render(collect(rt)))\n"
        "rt.optimizer_factory('adamw', 'replicated')\n"
        "after = {h['hook']: h for h in collect(rt)['hooks']}['rlport_optimizer']\n"
        "print(json.dumps([before, after]))\n"
    )
    result = run([sys.executable, "-c", code], extra_path=tmp_path, RLPORT_SUMMARY="0", COLUMNS="200")
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.splitlines()[-1])
    assert before["served_by"] == "vendor" and before["resolved"] is False
    assert "vendor (asked first)" in result.stdout
    assert after["served_by"] == "reference" and after["resolved"] is True


NO_DEVICES = """
    @rlport.hookimpl
    def rlport_device_info(self):  # a torch extension's device: the probe could not count them
        return DeviceInfo(device_type="simdev", count=0, visible_devices_env="SIMDEV_VISIBLE_DEVICES")
"""


def test_a_device_plugin_that_counts_no_devices_is_refused_at_init_naming_it(tmp_path: Path) -> None:
    """A probe that may not import torch answers on outside evidence; when the device info then
    counts no devices, init refuses with the plugin, the count and the variable to check (it used
    to hand out the device type without an index and fail later), and the CLI still starts."""
    _vendor(tmp_path, body=NO_DEVICES, reason="torch-simdev installed")
    code = "import rlport; rlport.init()"
    result = run(
        [sys.executable, "-c", code], extra_path=tmp_path, RLPORT_SUMMARY="0", SIMDEV_VISIBLE_DEVICES=""
    )
    assert result.returncode != 0
    text = " ".join(result.stderr.split())
    assert (
        "device plugin 'vendor' is available by its probe, but its device info counts 0 'simdev' devices"
        in text
    )
    assert "check SIMDEV_VISIBLE_DEVICES (now '')" in text and "RLPORT_DEVICE=cpu" in text
    listed = rlport_cli("plugins", extra_path=tmp_path)  # the table, then the problem (exit 2)
    assert "vendor" in listed.stdout and "SIMDEV_VISIBLE_DEVICES" in listed.stdout + listed.stderr
