"""``actor.strategy=fsdp``: FSDP2. Every decoder layer and then the root are ``fully_shard``-ed
over a one-dimensional ``DeviceMesh`` of the data-parallel ranks, so each rank keeps 1/N of the
parameters, gradients and optimizer state.

``actor.fsdp_config`` sets the mixed precision policy (``param_dtype`` for the all-gathered
compute copy, ``reduce_dtype`` for the gradient reduce-scatter) and ``param_offload`` (parameters,
gradients and optimizer state on the host between uses, ``CPUOffloadPolicy``). Full weights leave
the shards in two ways: one parameter at a time on every rank (:meth:`FsdpStrategy.full_parameters`,
for the weight sync: never the whole model twice), or the whole state dict on CPU
(:meth:`FsdpStrategy.full_state_dict`, for Hugging Face checkpoints). For resuming, every rank
writes and reads back its own shards of the model and the AdamW state through
:mod:`torch.distributed.checkpoint` (``step_N/dcp/``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlport.train.checkpoint import SHARDED_DIR, missing_state


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks to shard one by one: the modules named in the model's
    ``_no_split_modules`` (transformers sets it per architecture), else every ``ModuleList`` item."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if layers:
        return layers
    return [m for lst in model.modules() if isinstance(lst, torch.nn.ModuleList) for m in lst]


class FsdpStrategy:
    name = "fsdp"

    def __init__(self, world: int, device_type: str, config: Any = None) -> None:
        self.world = world
        self.device_type = device_type
        self.param_dtype = getattr(config, "param_dtype", "") or ""
        self.reduce_dtype = getattr(config, "reduce_dtype", "") or ""
        self.param_offload = bool(getattr(config, "param_offload", False))

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device_type, (self.world,))
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self.param_dtype or self.reduce_dtype:
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=getattr(torch, self.param_dtype) if self.param_dtype else None,
                reduce_dtype=getattr(torch, self.reduce_dtype) if self.reduce_dtype else None,
            )
        if self.param_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        for layer in decoder_layers(model):
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        # Reduce-scatter only on the mini-batch's last backward; before it, gradients stay unsharded.
        model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def reduce(self, model: torch.nn.Module) -> None:
        """Nothing left to do: the last backward reduce-scattered the gradients."""

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in model.named_parameters():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            yield name, full.detach()

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def save_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path, rank: int
    ) -> None:
        """Each rank writes its own shards of the model and of the AdamW state into ``folder/dcp``
        (:func:`torch.distributed.checkpoint.save`; nothing is gathered)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / SHARDED_DIR))

    def load_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path
    ) -> None:
        """Read this rank's shards back from ``folder/dcp`` into the model and the optimizer, so a
        resumed run holds bit for bit the weights and AdamW state that were saved."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        sharded = folder / SHARDED_DIR
        if not sharded.is_dir():
            raise missing_state(folder, SHARDED_DIR, self.name)
        model_state, optim_state = get_state_dict(model, optimizer)  # allocates the optimizer state
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(sharded))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
