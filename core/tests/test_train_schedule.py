"""Learning-rate schedules (``actor.lr_schedule.*``, ``critic.lr_schedule.*``): the rates equal
verl's own schedule functions step by step, a resumed schedule continues the curve, verl's keys
map onto them, and a run's ``actor/lr`` follows the schedule across a resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from demo_runs import metrics, run_demo
from verl_source import verl_functions

from rlport.train.config.load import load_config
from rlport.train.config.schema import LrScheduleConfig
from rlport.train.models.schedule import lr_schedule, warmup_steps

LR = 2e-5
TOTAL = 20


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=LR)


def _rates(scheduler: Any, n: int) -> list[float]:
    """The rate each of ``n`` updates uses (read before the step that follows each update)."""
    out = []
    for _ in range(n):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _verl(kind: str, optimizer: torch.optim.Optimizer, s: LrScheduleConfig) -> Any:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LambdaLR

    fns = verl_functions(
        "verl/utils/torch_functional.py",
        ("get_constant_schedule_with_warmup", "get_cosine_schedule_with_warmup"),
        {"math": math, "LambdaLR": LambdaLR, "Optimizer": Optimizer},
    )
    warm = warmup_steps(s, TOTAL)
    if kind == "constant":
        return fns["get_constant_schedule_with_warmup"](optimizer, num_warmup_steps=warm)
    return fns["get_cosine_schedule_with_warmup"](
        optimizer,
        num_warmup_steps=warm,
        num_training_steps=TOTAL,
        min_lr_ratio=s.min_lr_ratio,
        num_cycles=s.num_cycles,
    )


SCHEDULES = [
    LrScheduleConfig(),
    LrScheduleConfig(warmup_steps=5),
    LrScheduleConfig(warmup_steps_ratio=0.25),
    LrScheduleConfig(type="cosine"),
    LrScheduleConfig(type="cosine", warmup_steps=3, min_lr_ratio=0.1),
    LrScheduleConfig(type="cosine", warmup_steps_ratio=0.1, num_cycles=1.5, min_lr_ratio=0.2),
]


@pytest.mark.parametrize(
    "s",
    SCHEDULES,
    ids=lambda s: f"{s.type}-w{s.warmup_steps}-r{s.warmup_steps_ratio}-m{s.min_lr_ratio}-c{s.num_cycles}",
)
def test_rates_equal_verls_schedules(s: LrScheduleConfig) -> None:
    ours = _rates(lr_schedule(_optimizer(), s, lr=LR, total_steps=TOTAL), TOTAL)
    theirs = _rates(_verl(s.type, _optimizer(), s), TOTAL)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=0.0)
    assert len(set(ours)) > 1 or s == LrScheduleConfig()  # every schedule but the default moves


def test_rates_by_hand() -> None:
    """Constant with 4 warm-up steps: 0, 1/4, 2/4, 3/4, then the rate. Cosine over 10 from 0.5
    of the rate at the end: halfway the mean of the two."""
    warm = _rates(lr_schedule(_optimizer(), LrScheduleConfig(warmup_steps=4), lr=LR, total_steps=8), 6)
    assert warm == pytest.approx([0.0, LR / 4, LR / 2, 3 * LR / 4, LR, LR])
    cos = _rates(
        lr_schedule(_optimizer(), LrScheduleConfig(type="cosine", min_lr_ratio=0.5), lr=LR, total_steps=10),
        10,
    )
    assert cos[0] == pytest.approx(LR) and cos[5] == pytest.approx(0.75 * LR)
    assert all(a > b for a, b in itertools.pairwise(cos))


@pytest.mark.parametrize("done", [1, 4, 13])
def test_a_resumed_schedule_continues_the_curve(done: int) -> None:
    s = LrScheduleConfig(type="cosine", warmup_steps=5, min_lr_ratio=0.1)
    whole = _rates(lr_schedule(_optimizer(), s, lr=LR, total_steps=TOTAL), TOTAL)
    opt = _optimizer()
    opt.param_groups[0]["lr"] = 123.0  # a loaded optimizer state holds the rate it had reached
    resumed = _rates(lr_schedule(opt, s, lr=LR, total_steps=TOTAL, done=done), TOTAL - done)
    assert resumed == pytest.approx(whole[done:], rel=1e-12)


def test_verl_schedule_keys_map() -> None:
    cfg = load_config(
        [
            "actor_rollout_ref.actor.optim.lr_scheduler_type=cosine",
            "actor_rollout_ref.actor.optim.lr_warmup_steps=-1",
            "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.1",
            "actor_rollout_ref.actor.optim.min_lr_ratio=0.05",
            "actor_rollout_ref.actor.optim.num_cycles=0.5",
            "actor_rollout_ref.actor.optim.total_training_steps=1000",
            "critic.optim.warmup_style=constant",
            "critic.optim.lr_warmup_steps=10",
            "critic.optim.min_lr_ratio=null",
        ]
    )
    assert cfg.actor.lr_schedule == LrScheduleConfig(
        type="cosine", warmup_steps=0, warmup_steps_ratio=0.1, min_lr_ratio=0.05
    )
    assert cfg.critic.lr_schedule == LrScheduleConfig(type="constant", warmup_steps=10)
    from rlport.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(["actor_rollout_ref.actor.optim.lr_scheduler_type=linear"])
    assert "'actor.lr_schedule.type' is 'linear'" in str(err.value.message) and "cosine" in str(err.value)
    with pytest.raises(ConfigError, match="zero_indexed_step"):
        load_config(["actor_rollout_ref.actor.optim.zero_indexed_step=False"])


def _run(out: Path, *extra: str) -> list[dict[str, Any]]:
    schedule = (
        "actor.lr_schedule.type=cosine",
        "actor.lr_schedule.warmup_steps=2",
        "actor.lr_schedule.min_lr_ratio=0.1",
    )
    return metrics(run_demo(out, "actor.lr=1e-4", *schedule, *extra))


def test_a_run_follows_the_schedule_across_a_resume(tmp_path: Path) -> None:
    """Each step's actor/lr is the schedule's rate for that update over trainer.steps=5; a run
    stopped after step 3 and resumed gives steps 4 and 5 the same rates."""
    s = LrScheduleConfig(type="cosine", warmup_steps=2, min_lr_ratio=0.1)
    want = _rates(lr_schedule(_optimizer(), s, lr=1e-4, total_steps=5), 5)
    out = tmp_path / "run"
    _run(out, "trainer.steps=5", "trainer.save_every=3")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["actor/lr"] for r in rows] == pytest.approx(want, rel=1e-9)
    assert want[0] == 0.0 and want[2] == pytest.approx(1e-4)
    resumed = _run(
        tmp_path / "again", "trainer.steps=5", f"trainer.resume_from={out / 'checkpoints' / 'step_3'}"
    )
    assert [r["actor/lr"] for r in resumed] == pytest.approx(want[3:], rel=1e-9)
