"""Patches through the whole runtime: ``rlport.init()`` in a program and in a spawned worker,
``rlport info`` and ``rlport doctor``, each in a fresh Python process with the fixture plugins
installed (on PYTHONPATH) and ``RLPORT_PLUGINS=pdemo``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import patch_fixtures as fx
import pytest

PROGRAM = """
import json
import multiprocessing as mp
import os

import rlport


def state():
    from rlport.patches import get_manager
    import patchme.core as core
    import patchme.late as late

    return {
        "pid": os.getpid(),
        "records": [(r.target, r.status) for r in get_manager().records],
        "greet": core.Greeter().greet("w"),
        "shout": core.Greeter().shout("w"),
        "compute": late.compute(1),
        "calls": __import__("rlport_pdemo").CALLS,
    }


def worker(queue):
    rlport.init()
    rlport.init()
    queue.put(state())


if __name__ == "__main__":
    import patchme.core  # imported before init: its patches apply at init; patchme.late's wait

    rlport.init()
    rlport.init()  # idempotent
    from rlport.patches import get_manager

    at_init = [(r.target, r.status) for r in get_manager().records]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(queue,))
    proc.start()
    child = queue.get(timeout=120)
    proc.join(60)
    print(json.dumps({"at_init": at_init, "parent": state(), "child": child, "exitcode": proc.exitcode}))
"""


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.build(tmp_path_factory.mktemp("patch_init_fixtures"))


def run(root: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    clean.update(PYTHONPATH=os.pathsep.join([str(root), clean.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    clean.update({"RLPORT_PLUGINS": "pdemo", "COLUMNS": "160", **env})
    return subprocess.run(
        [sys.executable, *args], cwd=root, env=clean, capture_output=True, text=True, timeout=240
    )


def test_init_applies_once_and_spawned_worker_gets_the_same_patches(fixture_root: Path) -> None:
    script = fixture_root / "program.py"
    script.write_text(textwrap.dedent(PROGRAM))
    proc = run(fixture_root, [str(script)], RLPORT_SUMMARY="1")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["at_init"] == [
        ["patchme.core:Greeter.greet", "applied"],
        ["patchme.core:Greeter.shout", "applied"],
        ["patchme.core:greet", "skipped"],
        ["patchme.late:compute", "pending"],
    ]
    final = [
        ["patchme.core:Greeter.greet", "applied"],
        ["patchme.core:Greeter.shout", "applied"],
        ["patchme.core:greet", "skipped"],
        ["patchme.late:compute", "applied"],
    ]
    parent, child = data["parent"], data["child"]
    assert child["pid"] != parent["pid"] and data["exitcode"] == 0
    for side in (parent, child):
        assert side["records"] == final
        assert side["greet"] == "[demo] hi w"  # wrapped exactly once despite two init() calls
        assert side["shout"] == "[DEMO] HI W"
        assert side["compute"] == 2
        assert side["calls"] == ["demo", "demo", "late"]
    # one summary for the whole run: the worker printed none, and reported nothing of its own imports
    assert proc.stderr.count("Patches: 2 applied · 1 pending · 1 skipped") == 1, proc.stderr
    assert "plugin pdemo" in proc.stderr
    # the parent's import of patchme.late, after the summary, is reported in one line
    events = [line for line in proc.stderr.splitlines() if " imported, plugin " in line]
    assert events == [
        "Patches: patchme.late imported, plugin pdemo: 1 applied (compute) · now 3 applied · 1 skipped"
    ], proc.stderr


def test_rlport_info_shows_the_patch_table(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-m", "rlport", "info"])
    assert proc.returncode == 0, proc.stderr
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    # nothing imported patchme in `rlport info`: its patches wait, the version gate still applies
    assert "Patches: 3 pending · 1 skipped" in lines
    assert "plugin pdemo" in lines
    assert "  patchme.core  (patchme 1.2.0)" in lines
    out = proc.stdout
    assert "      greet wrapped               pending  applies when patchme.core is first imported" in lines
    assert "patchme 1.2.0 is installed; the patch is known to be right for patchme>=2.0 only" in out
    assert "why: route greet through the device's fused kernel" in out

    proc = run(fixture_root, ["-m", "rlport", "info", "--json"])
    assert proc.returncode == 0, proc.stderr
    patches = json.loads(proc.stdout)["patches"]
    assert [(p["plugin"], p["target"], p["status"]) for p in patches] == [
        ("pdemo", "patchme.core:Greeter.greet", "pending"),
        ("pdemo", "patchme.core:Greeter.shout", "pending"),
        ("pdemo", "patchme.core:greet", "skipped"),
        ("pdemo", "patchme.late:compute", "pending"),
    ]
    assert patches[2]["installed"] == "1.2.0" and patches[2]["versions"] == ">=2.0"


def test_rlport_doctor_reports_the_skipped_patch(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-m", "rlport", "doctor"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert "patch patchme.core:greet of plugin 'pdemo' skipped: patchme 1.2.0 is installed" in out
    assert "fix: pip install 'patchme>=2.0'" in out


def test_strict_mode_makes_a_skipped_patch_fatal(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-c", "import rlport; rlport.init()"], RLPORT_STRICT="1", RLPORT_SUMMARY="0")
    assert proc.returncode == 1
    assert "rlport.errors.PatchError: RLPORT_STRICT: patch patchme.core:greet of plugin 'pdemo' skipped" in (
        proc.stderr
    )


LATE = """
import json

import rlport
from rlport import summary

runtime = rlport.init()
import patchme.core  # noqa: E402,F401  (after init: pending patches apply at these imports)
import patchme.late  # noqa: E402,F401

print(json.dumps([(p["target"], p["status"]) for p in summary.collect(runtime)["patches"]]))
"""

FINAL = [
    ["patchme.core:Greeter.greet", "applied"],
    ["patchme.core:Greeter.shout", "applied"],
    ["patchme.core:greet", "skipped"],
    ["patchme.late:compute", "applied"],
]


def event_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " imported, plugin " in line or '"patch_event"' in line]


@pytest.fixture(scope="module")
def late_script(fixture_root: Path) -> Path:
    script = fixture_root / "late.py"
    script.write_text(textwrap.dedent(LATE))
    return script


def test_pending_patches_are_reported_when_they_apply_and_the_summary_rereads_them(
    fixture_root: Path, late_script: Path
) -> None:
    proc = run(fixture_root, [str(late_script)], RLPORT_SUMMARY="1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == FINAL  # summary.collect() gives the state now
    assert "Patches: 3 pending · 1 skipped" in proc.stderr  # the startup summary, before the imports
    assert event_lines(proc.stderr) == [
        "Patches: patchme.core imported, plugin pdemo: 2 applied (Greeter.greet, Greeter.shout) · now 2 applied · 1 pending · "
        "1 skipped",
        "Patches: patchme.late imported, plugin pdemo: 1 applied (compute) · now 3 applied · 1 skipped",
    ]


def test_json_mode_emits_a_json_line_per_late_decision(fixture_root: Path, late_script: Path) -> None:
    proc = run(fixture_root, [str(late_script)], RLPORT_SUMMARY="json")
    assert proc.returncode == 0, proc.stderr
    first, *events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [p["status"] for p in first["patches"]] == ["pending", "pending", "skipped", "pending"]
    assert [(e["patch_event"]["module"], e["patch_event"]["outcome"]) for e in events] == [
        ("patchme.core", "applied"),
        ("patchme.late", "applied"),
    ]
    assert [[p["target"], p["status"]] for p in events[-1]["patches"]] == FINAL


@pytest.mark.parametrize("env", [{"RLPORT_SUMMARY": "0"}, {"RANK": "1", "WORLD_SIZE": "2"}])
def test_late_decisions_are_silent_off_rank_0_or_with_the_summary_off(
    fixture_root: Path, late_script: Path, env: dict[str, str]
) -> None:
    proc = run(fixture_root, [str(late_script)], **env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == FINAL  # applied all the same
    assert "Patches:" not in proc.stderr and '"patch_event"' not in proc.stderr, proc.stderr


def test_rlport_info_import_targets_shows_the_final_state(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-m", "rlport", "info", "--import-targets"])
    assert proc.returncode == 0, proc.stderr
    lines = [line.rstrip() for line in proc.stdout.splitlines()]
    assert "Patches: 3 applied · 1 skipped" in lines
    assert "    compute wrapped  function     applied  for patchme>=1.0,<2" in lines
    assert " imported, plugin " not in proc.stdout + proc.stderr  # info prints the state itself

    proc = run(fixture_root, ["-m", "rlport", "info", "--json", "--import-targets"])
    assert proc.returncode == 0, proc.stderr
    assert [[p["target"], p["status"]] for p in json.loads(proc.stdout)["patches"]] == FINAL


def test_rlport_doctor_imports_pending_targets_and_lists_a_late_failure(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-m", "rlport", "doctor"], RLPORT_PLUGINS="platebad")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = " ".join(proc.stdout.split())
    assert (
        "patches: patch patchme.later:quadruple of plugin 'platebad' failed when patchme.later was imported: "
        "patchme.later:quadruple does not exist in patchme 1.2.0; nothing to wrap (so 3 other patch(es) of "
        "'platebad' are not in effect)"
    ) in out
    assert "fix: pip install -U rlport-platebad" in out
    assert "1 problem(s)" in out


def test_strict_mode_makes_a_late_failure_fatal_after_reporting_it(fixture_root: Path) -> None:
    program = "import rlport; rlport.init(); import patchme.core; import patchme.later"
    proc = run(fixture_root, ["-c", program], RLPORT_PLUGINS="platebad", RLPORT_STRICT="1")
    assert proc.returncode == 1
    err = proc.stderr
    assert (
        "rlport.errors.PatchError: RLPORT_STRICT: patch patchme.later:quadruple of plugin 'platebad' failed when "
        "patchme.later was imported: patchme.later:quadruple does not exist in patchme 1.2.0; nothing to wrap; "
        "the plugin's other patches were rolled back\n  fix: pip install -U rlport-platebad"
    ) in err, err
    (line,) = event_lines(err)[-1:]
    assert line.startswith("Patches: patchme.later imported, plugin platebad: patchme.later:quadruple failed")


DEVICE = """
import json

import torch

import rlport

runtime = rlport.init()
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

config = Qwen2Config(
    vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1,
)
torch.manual_seed(0)
Qwen2ForCausalLM(config)(torch.tensor([[1, 2, 3]]))
from rlport.patches import get_manager  # noqa: E402

print(json.dumps({
    "device": runtime.device_plugin,
    "records": [(r.target.rpartition(":")[2], r.status, r.is_problem) for r in get_manager().records],
    "calls": __import__("rlport_pdev").CALLS,
}))
"""


def test_a_device_plugin_patching_a_transformers_model_class_applies_and_reports_at_model_load(
    fixture_root: Path,
) -> None:
    """With a device plugin other than cpu active (strict mode on), its patch of a transformers model
    class is pending at init and applies when the model is built; the patch it declared an expected
    skip (for older transformers) neither stops strict mode nor counts as a problem."""
    script = fixture_root / "device.py"
    script.write_text(textwrap.dedent(DEVICE))
    proc = run(fixture_root, [str(script)], RLPORT_PLUGINS="pdev", RLPORT_STRICT="1", RLPORT_SUMMARY="1")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["device"] == "pdev"
    assert data["records"] == [
        ["Qwen2RMSNorm.forward", "applied", False],
        ["Qwen2RMSNorm.old_forward", "skipped", False],
    ]
    assert data["calls"] == ["norm"] * 3  # input, post-attention and final norm of the one-layer model
    assert "device plugin: pdev" in proc.stderr
    assert "Patches: 1 pending · 1 skipped as expected" in proc.stderr
    assert event_lines(proc.stderr) == [
        "Patches: transformers.models.qwen2.modeling_qwen2 imported, plugin pdev: 1 applied (Qwen2RMSNorm.forward) · now "
        "1 applied · 1 skipped as expected"
    ]


def test_rlport_doctor_accepts_an_expected_skip(fixture_root: Path) -> None:
    proc = run(fixture_root, ["-m", "rlport", "doctor"], RLPORT_PLUGINS="pdev")
    assert "patches:" not in proc.stdout, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rlport_train_log_shows_the_model_class_patch_in_effect(fixture_root: Path, tmp_path: Path) -> None:
    """`rlport train` with a device plugin other than cpu: its transformers model-class patch is in
    effect in the log, never left as pending (rlport.init() runs before the demo imports its Qwen2
    modeling, so the patch is pending in the summary and the log reports it applied as the model
    class is imported), with its expected skip shown, not a problem."""
    overrides = [
        "trainer.steps=1",
        "trainer.progress=false",
        "data.train_batch_size=4",
        "rollout.n=4",
        "rollout.max_new_tokens=4",
        "actor.mini_batches=2",
        f"trainer.output_dir={tmp_path / 'run'}",
    ]
    proc = run(fixture_root, ["-m", "rlport", "train", "--demo", *overrides], RLPORT_PLUGINS="pdev")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stderr
    assert "device plugin: pdev" in log
    summary, _, after = log.partition("Patches: transformers.models.qwen2.modeling_qwen2 imported")
    assert "Patches: 1 pending · 1 skipped as expected" in summary, log
    assert after.startswith(
        ", plugin pdev: 1 applied (Qwen2RMSNorm.forward) · now 1 applied · 1 skipped as expected"
    )
    assert "pending" not in after and "run `rlport doctor`" not in log  # reported in effect before training
