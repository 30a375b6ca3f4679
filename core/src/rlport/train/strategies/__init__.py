"""How the actor's model is spread over the data-parallel ranks (``actor.strategy``).

A strategy wraps the model once (:meth:`Strategy.wrap`), says how micro-batch gradients
accumulate (:meth:`Strategy.accumulate`) and are averaged over the ranks (:meth:`Strategy.reduce`),
and hands out the full, unsharded weights for the engine and checkpoints
(:meth:`Strategy.full_parameters`, :meth:`Strategy.full_state_dict`). One module per strategy:

``replicated`` (:mod:`.replicated`): a full model and optimizer on every rank, gradients averaged
in one flat all-reduce after the backward passes. ``ddp`` (:mod:`.ddp`): torch's
``DistributedDataParallel``, gradients all-reduced in buckets during the last backward of a
mini-batch. ``fsdp`` (:mod:`.fsdp`): FSDP2 (``fully_shard``), parameters, gradients and optimizer
state sharded over the ranks. ``megatron`` (:mod:`.megatron`): megatron-core's GPT model, converted
from and to Hugging Face weights by mbridge.
"""

from __future__ import annotations

from typing import Any

from rlport.train.strategies.base import BUILT, KNOWN, Strategy, unwrap

__all__ = ["BUILT", "KNOWN", "Strategy", "build", "unwrap"]


def build(
    name: str,
    *,
    world: int,
    device_type: str,
    fsdp: Any = None,
    megatron: Any = None,
    path: str = "",
    backend: str = "gloo",
) -> Strategy:
    """The strategy object for ``name`` (one of :data:`BUILT`); fsdp and megatron load the weights
    from ``path`` themselves (megatron starts a one-rank group on ``backend`` when none is up)."""
    if name == "megatron":
        from rlport.train.strategies.megatron import MegatronStrategy

        return MegatronStrategy(world, device_type, megatron, path=path, backend=backend)
    if name == "ddp":
        from rlport.train.strategies.ddp import DdpStrategy

        return DdpStrategy(world)
    if name == "fsdp":
        from rlport.train.strategies.fsdp import FsdpStrategy

        return FsdpStrategy(world, device_type, fsdp, path=path)
    from rlport.train.strategies.replicated import ReplicatedStrategy

    return ReplicatedStrategy(world)
