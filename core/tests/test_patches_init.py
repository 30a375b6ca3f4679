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
    clean.update(RLPORT_PLUGINS="pdemo", COLUMNS="160", **env)
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
