"""Faults: a worker killed in the middle of a step ends the run at once with an error naming the
worker (rank, node) and the step; the last checkpoint stays intact and loadable; resuming from it
(``trainer.resume_from=latest``) continues with the same step count and the same data position.

The kill is real: ``ray.kill`` on rank 1's actor right after the driver handed both workers their
``train`` call of step 3 (rank 0 is then left in a collective with a dead peer)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rlport.errors import WorkerError
from rlport.train.cli import build_config
from rlport.train.data.prompts import Sampler
from rlport.train.driver.trainer import Trainer
from rlport.train.workers.group import WorkerGroup

ARGS = [
    "trainer.progress=false",
    "data.train_batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "trainer.workers=2",
    "trainer.ray_num_cpus=2",
    "trainer.save_every=2",
    "trainer.steps=4",
]


def _trainer(out: Path, *extra: str, log: io.StringIO | None = None) -> Trainer:
    cfg = build_config([*ARGS, f"trainer.output_dir={out}", *extra], demo=True)
    return Trainer(cfg, console=Console(file=log or io.StringIO(), width=400))


def test_a_worker_killed_mid_step_is_named_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "run"
    submit = WorkerGroup.submit

    def kill_rank_1_in_step_3(pool: Any, method: str, args: list[tuple[Any, ...]]) -> list[Any]:
        refs = submit(pool, method, args)
        if method == "train" and pool.step == 3:
            ray.kill(pool.workers[1])
        return refs

    monkeypatch.setattr(WorkerGroup, "submit", kill_rank_1_in_step_3)
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as err:
        _trainer(out).fit()
    assert time.monotonic() - t0 < 400  # not stuck behind rank 0's collective with the dead rank
    e = err.value
    assert (e.rank, e.step) == (1, 3)
    assert e.message.startswith(f"worker rank 1 on {e.node} died during 'train' of step 3")
    assert "(node " in e.node
    assert e.fix.startswith(f"the last complete checkpoint, {out / 'checkpoints' / 'step_2'}, is intact")
    assert "trainer.resume_from=latest" in e.fix
    monkeypatch.setattr(WorkerGroup, "submit", submit)

    # the checkpoint of step 2 is intact and loads; nothing of step 3 or 4 passes for one
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step_2"]
    state = json.loads((ckpts / "step_2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["sampler"] == {"epoch": 0, "cursor": 8}
    assert (ckpts / "step_2" / "dcp" / ".metadata").is_file()  # fsdp (the default) wrote its shards
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(ckpts / "step_2")).num_parameters() > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]

    # resume: steps 3 and 4, the batches an uninterrupted run would draw; a save some run did not
    # finish is reported and left alone
    (ckpts / "step_4.partial-0badf00d").mkdir()
    log = io.StringIO()
    resumed = _trainer(out, "trainer.resume_from=latest", log=log)
    assert (
        f"note: ignoring {ckpts / 'step_4.partial-0badf00d'}: a checkpoint a run stopped writing"
        in log.getvalue()
    )
    assert f"resuming from {ckpts / 'step_2'} (step 2, data epoch 0 position 8)" in log.getvalue()
    assert resumed.start_step == 2 and resumed.resume_from == ckpts / "step_2"
    drawn: list[list[int]] = []
    next_batch = Sampler.next_batch

    def record(self: Sampler) -> list[int]:
        drawn.append(next_batch(self))
        return drawn[-1]

    monkeypatch.setattr(Sampler, "next_batch", record)
    res = resumed.fit()
    assert [h["step"] for h in res.history] == [3, 4]
    assert all(h["workers/weights_in_sync"] == 1.0 for h in res.history)
    straight = Sampler(len(resumed.examples), 4, shuffle=True, seed=0)
    expected = [next_batch(straight) for _ in range(4)][2:]
    assert drawn == expected
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert json.loads((ckpts / "step_4" / "trainer_state.json").read_text())["step"] == 4
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "latest",
        "step_2",
        "step_4",
        "step_4.partial-0badf00d",
    ]
