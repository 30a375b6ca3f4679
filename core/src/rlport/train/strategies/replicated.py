"""``actor.strategy=replicated``: a full model and optimizer per rank, gradients averaged in one
flat all-reduce (through the plugin's collectives backend) after a mini-batch's backward passes."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from rlport.train.strategies.base import Local


class ReplicatedStrategy(Local):
    name = "replicated"

    def __init__(self, world: int) -> None:
        self.world = world

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def reduce(self, model: torch.nn.Module) -> None:
        average_gradients([p for p in model.parameters() if p.requires_grad], self.world)


def average_gradients(params: list[torch.nn.Parameter], world: int, group: Any = None) -> None:
    """Average the gradients of ``params`` over the ``world`` ranks of ``group`` (default: all) in
    one flat all-reduce; a parameter without a gradient counts as zeros."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, group=group)
    flat /= world
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n
