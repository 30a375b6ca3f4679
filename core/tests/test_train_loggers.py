"""`trainer.logger`: metrics through the real tensorboard, wandb (offline), mlflow and swanlab
libraries, read back from what each wrote; a missing library is an error naming its extra."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from demo_runs import run_demo
from rich.console import Console

from rlport.extras import MissingExtra
from rlport.train.tracking.loggers import check_installed, open_loggers

METRICS = [
    {"step": 1, "reward/mean": 0.25, "actor/kl": 0.5},
    {"step": 2, "reward/mean": 0.75, "actor/kl": 0.125},
]
#: two validation answers; the second holds a pipe and a line break, which a table must keep
SAMPLES = [
    {"data_source": "gsm8k", "prompt": "2+2?", "response": "#### 4", "ground_truth": "4", "score": 1.0},
    {
        "data_source": "gsm8k",
        "prompt": "a|b",
        "response": "line one\nline two",
        "ground_truth": "7",
        "score": 0.0,
    },
]


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _wandb_history(run: Path) -> list[dict]:
    """The history records of an offline run, read back by wandb's own log inspector."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def _write(name: str, folder: Path, config: dict, samples_step: int) -> Any:
    """The logger ``name`` after METRICS at steps 1 and 2 and SAMPLES at ``samples_step``, closed."""
    (logger,) = open_loggers(["console", name], project="proj", name="exp", config=config, folder=folder)
    for m in METRICS:
        logger.log(m, m["step"])
    logger.log_samples(SAMPLES, samples_step)
    logger.close()
    return logger


def test_tensorboard_events_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    _write("tensorboard", tmp_path, {}, 2)
    assert _scalars(tmp_path / "tensorboard", "reward/mean") == [(1, 0.25), (2, 0.75)]
    assert _scalars(tmp_path / "tensorboard", "actor/kl") == [(1, 0.5), (2, 0.125)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    (event,) = acc.Tensors("val/generations/text_summary")
    table = make_ndarray(event.tensor_proto).item().decode().splitlines()
    assert event.step == 2 and table[0] == "| data_source | prompt | response | ground_truth | score |"
    assert table[2:] == [
        "| gsm8k | 2+2? | #### 4 | 4 | 1.0 |",
        "| gsm8k | a\\|b | line one<br>line two | 7 | 0.0 |",
    ]


def test_wandb_offline_run_holds_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _write("wandb", tmp_path, {"trainer": {"seed": 3}}, 3)
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    history = _wandb_history(run)
    assert [(h["_step"], h["reward/mean"], h["actor/kl"]) for h in history[:2]] == [
        (1, 0.25, 0.5),
        (2, 0.75, 0.125),
    ]
    assert history[2]["_step"] == 3 and history[2]["val/generations._type"] == "table-file"
    table = json.loads((run / "files" / history[2]["val/generations.path"]).read_text())
    assert table["columns"] == ["data_source", "prompt", "response", "ground_truth", "score"]
    assert table["data"] == [[s[c] for c in table["columns"]] for s in SAMPLES]


def test_mlflow_run_holds_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against mlflow's file store (what mlflow-skinny has; the default, sqlite, needs full mlflow)."""
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = _write("mlflow", tmp_path, {"actor": {"lr": 1e-5}}, 2)
    run_id = logger.run.info.run_id
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(run_id, "reward/mean")
    assert [(h.step, h.value) for h in history] == [(1, 0.25), (2, 0.75)]
    assert client.get_run(run_id).data.params["actor.lr"] == "1e-05"
    table = json.loads(
        Path(client.download_artifacts(run_id, "val/generations/step_2.json", str(tmp_path))).read_text()
    )
    assert table["columns"][2] == "response" and [row[2] for row in table["data"]] == [
        "#### 4",
        "line one\nline two",
    ]


def test_swanlab_offline_run_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """swanlab's offline run folder: its record file and the run's configuration (its record format
    has no public reader, so the metrics themselves are not read back here)."""
    pytest.importorskip("swanlab")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    _write("swanlab", tmp_path, {"trainer": {"seed": 3}}, 2)
    (run,) = (tmp_path / "swanlog").glob("run-*")
    assert list(run.glob("run-*.swanlab"))
    assert "seed" in (run / "files" / "config.yaml").read_text()


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow", "swanlab"])
def test_missing_library_names_the_extra(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtra) as err:
        check_installed(["console", name])
    assert f"trainer.logger={name} needs {name}" in err.value.message
    assert err.value.fix == f'pip install "rlport[{name}]"'


def test_a_run_logs_to_tensorboard_and_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    console = Console(file=io.StringIO(), width=200)
    res = run_demo(
        out,
        "trainer.steps=2",
        "trainer.logger=[tensorboard,wandb]",
        "trainer.experiment_name=demo-run",
        console=console,
    )
    assert "step 1/2" not in console.file.getvalue()  # no console logger
    assert not (out / "metrics.jsonl").exists()  # no jsonl logger
    assert res.plot_path.is_file()
    tb = _scalars(out / "tensorboard", "reward/mean")
    assert tb == [(h["step"], pytest.approx(h["reward/mean"])) for h in res.history]
    (run,) = (out / "wandb").glob("offline-run-*")
    history = _wandb_history(run)
    assert [h["reward/mean"] for h in history] == pytest.approx([h["reward/mean"] for h in res.history])
