"""A model's learning-rate schedule (``actor.lr_schedule.*``, ``critic.lr_schedule.*``).

transformers' schedules, stepped once per trainer step that updates the model, as verl steps its
own: ``constant`` is ``get_constant_schedule_with_warmup``, ``cosine`` is
``get_cosine_with_min_lr_schedule_with_warmup`` (the same curve as verl's
``get_cosine_schedule_with_warmup`` with ``min_lr_ratio``). The update after ``k`` earlier ones
uses ``lr x f(k)``; with a warm-up, the first update's rate is 0, as in verl.

A resumed run continues the curve: the schedule starts after the updates the checkpoint made.
"""

from __future__ import annotations

from typing import Any

import torch


def warmup_steps(schedule: Any, total_steps: int) -> int:
    """``warmup_steps``, else ``warmup_steps_ratio`` x ``total_steps`` (rounded down, as verl)."""
    return schedule.warmup_steps or int(schedule.warmup_steps_ratio * total_steps)


def lr_schedule(
    optimizer: torch.optim.Optimizer, schedule: Any, *, lr: float, total_steps: int, done: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler of ``optimizer`` for ``schedule`` (an ``LrScheduleConfig``) from the rate
    ``lr`` over ``total_steps`` updates, after ``done`` of them (a resumed run)."""
    from transformers.optimization import (
        get_constant_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup,
    )

    warm = warmup_steps(schedule, total_steps)
    for group in optimizer.param_groups:
        # torch computes every rate from initial_lr; a loaded optimizer state holds the rate it
        # had reached, and the configured one is the base
        group["initial_lr"] = group["lr"] = lr
    last = done - 1 if done else -1
    if schedule.type == "cosine":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer,
            num_warmup_steps=warm,
            num_training_steps=total_steps,
            num_cycles=schedule.num_cycles,
            min_lr_rate=schedule.min_lr_ratio,
            last_epoch=last,
        )
    return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warm, last_epoch=last)
