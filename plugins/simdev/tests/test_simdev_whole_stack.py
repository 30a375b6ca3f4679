"""The whole rlport stack on simdev, a device that is not the host, against the cpu plugin.

Each run is ``python -m rlport.train --demo`` as its own process (rlport-simdev installed, as the
README's test command installs it, and selected with ``RLPORT_SIMDEV=1``), and the same command
with the cpu plugin; the
same seed must give the same rewards and losses. simdev computes with the host's kernels on its
own copies of the data, so a correct stack gives them bit for bit; the tolerance below
(1e-6 relative) only leaves room for a reduction reordered by a collective. What each run covers:
one worker with sleep and wake of weights and KV cache (the demo's defaults) and actor offload;
two workers on ddp and on fsdp (collectives through the simdev backend); a checkpoint and a
resume from it; LoRA; PPO with a critic.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = ["trainer.progress=false"]
COMPARED = ("reward/mean", "actor/pg_loss", "actor/grad_norm", "actor/entropy")


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """The plugin is found through its entry point, as a user's installed one is."""
    try:
        importlib.metadata.distribution("rlport-simdev")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("rlport-simdev is not installed: pip install -e plugins/simdev")


def train(out: Path, overrides: list[str], *, simdev: bool) -> list[dict[str, float]]:
    """The run's metrics; its log is kept beside them (``train.log``)."""
    env = dict(os.environ)
    env.update(RLPORT_SUMMARY="0", RAY_AUTH_MODE="disabled", WANDB_MODE="offline")
    env.pop("RLPORT_DEVICE", None)
    if simdev:
        env["RLPORT_SIMDEV"] = "1"
    else:
        env.pop("RLPORT_SIMDEV", None)
    args = ["--demo", *TINY, f"trainer.output_dir={out}", *overrides]
    proc = subprocess.run(
        [sys.executable, "-m", "rlport.train", *args], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (
        f"rlport train {' '.join(args)} on {'simdev' if simdev else 'cpu'}:\n{proc.stderr[-3000:]}"
    )
    (out / "train.log").write_text(proc.stdout + proc.stderr)
    log = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in log]


def assert_same(
    cpu: list[dict[str, float]], sim: list[dict[str, float]], keys: tuple[str, ...] = COMPARED
) -> None:
    assert len(cpu) == len(sim) > 0
    for a, b in zip(cpu, sim, strict=True):
        for key in keys:
            if key in a:
                assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-9), (
                    f"step {a['step']} {key}: cpu {a[key]!r}, simdev {b[key]!r}"
                )


CASES = {
    "one worker, sleep and wake, offload": ["trainer.steps=3", "actor.offload=true"],
    "two workers, ddp": ["trainer.steps=2", "trainer.workers=2", "actor.strategy=ddp"],
    "two workers, fsdp": ["trainer.steps=2", "trainer.workers=2", "actor.strategy=fsdp"],
    "LoRA": ["trainer.steps=2", "model.lora_rank=4", "actor.lr=1e-2"],
    "PPO with a critic": ["trainer.steps=2", "algorithm.adv_estimator=gae"],
}


@pytest.mark.parametrize("overrides", list(CASES.values()), ids=list(CASES))
def test_simdev_trains_as_the_cpu_plugin_does(tmp_path: Path, overrides: list[str]) -> None:
    cpu = train(tmp_path / "cpu", overrides, simdev=False)
    sim = train(tmp_path / "simdev", overrides, simdev=True)
    assert_same(cpu, sim)
    log = (tmp_path / "simdev" / "train.log").read_text()
    if "trainer.workers=2" in overrides:  # one device per rank, not both on simdev:0
        assert " simdev:0 " in log and " simdev:1 " in log, log[-2000:]


def test_a_checkpoint_on_simdev_resumes_where_it_stopped(tmp_path: Path) -> None:
    whole = train(tmp_path / "whole", ["trainer.steps=3"], simdev=True)
    first = tmp_path / "first"
    train(first, ["trainer.steps=2", "trainer.save_freq=2"], simdev=True)
    resumed = train(first, ["trainer.steps=3", "trainer.resume_from=latest"], simdev=True)
    assert_same(whole[2:], [m for m in resumed if m["step"] == 3])


@pytest.mark.parametrize("world", [1, 2])
def test_conformance_on_simdev(tmp_path: Path, world: int) -> None:
    """The suite's single-device (one rank) and multi-device (two ranks) profiles."""
    env = dict(os.environ)
    env["RLPORT_SIMDEV"] = "1"
    report = tmp_path / "report.json"
    args = ["conformance", "--plugin", "simdev", "--world-size", str(world), "--no-perf", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "rlport", *args, "--report", str(report)],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    data = json.loads(report.read_text())
    summary = data["summary"]
    assert summary["verdict"] == "CONFORMANT", (summary, proc.stdout[-3000:], proc.stderr[-2000:])


def test_the_cli_reports_simdev_active_and_doctor_finds_no_problem() -> None:
    env = dict(os.environ, RLPORT_SIMDEV="1")
    listed = subprocess.run(
        [sys.executable, "-m", "rlport", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    status = {p["name"]: p["status"] for p in json.loads(listed.stdout)["plugins"]}
    assert status["simdev"] == "active" and status["cpu"] == "available", status
    doctor = subprocess.run(
        [sys.executable, "-m", "rlport", "doctor"], env=env, capture_output=True, text=True, timeout=600
    )
    assert doctor.returncode == 0 and "no problems found" in doctor.stdout, doctor.stdout[-2000:]
