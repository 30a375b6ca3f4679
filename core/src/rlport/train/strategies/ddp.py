"""``actor.strategy=ddp``: torch's ``DistributedDataParallel``; a mini-batch's micro-batches
accumulate under ``no_sync()`` and the last backward all-reduces the gradients in buckets."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from rlport.train.strategies.base import Local


class DdpStrategy(Local):
    name = "ddp"

    def __init__(self, world: int) -> None:
        self.world = world

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type != "cpu" and device.index is not None else None
        return DistributedDataParallel(model, device_ids=ids)

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if last else model.no_sync()  # type: ignore[operator]

    def reduce(self, model: torch.nn.Module) -> None:
        """Nothing left to do: the last backward of the mini-batch averaged the gradients."""
