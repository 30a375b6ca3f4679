"""``actor.strategy=fsdp``: FSDP2. Every decoder layer and then the root are ``fully_shard``-ed
over a one-dimensional ``DeviceMesh`` of the data-parallel ranks, so each rank keeps 1/N of the
parameters, gradients and optimizer state.

The model arrives on the meta device (its structure, no weights): it is sharded there, each rank
allocates only its shards, and the weights are loaded into them from the checkpoint (rank 0 reads
the memory-mapped files and broadcasts one tensor at a time; each rank keeps its slice:
``set_model_state_dict`` with ``broadcast_from_rank0=True``). No rank ever holds the whole model, so
a rank's parameters, gradients and AdamW state are 1/N of a replica's. Buffers the checkpoint does
not hold (rotary frequencies) are computed by transformers' own initialisation of their modules.

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


def _alias_tied(model: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Add the names of tied parameters (``lm_head.weight`` sharing the embedding) that the
    checkpoint saved once, under the name it saved."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    for group in names.values():
        saved = next((n for n in group if n in full), None)
        for name in group:
            if saved is not None and name not in full:
                full[name] = full[saved]


class FsdpStrategy:
    name = "fsdp"
    lockstep_forward = True  # each forward all-gathers the parameters of every layer

    def __init__(self, world: int, device_type: str, config: Any = None, *, path: str = "") -> None:
        self.world = world
        self.device_type = device_type
        self.path = path
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
        if any(p.is_meta for p in model.parameters()):
            self._materialise(model, torch.device("cpu") if self.param_offload else mesh.device_type)
        return model

    def _materialise(self, model: torch.nn.Module, device: Any) -> None:
        """Allocate the shards on ``device`` and load the checkpoint at :attr:`path` into them."""
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        from rlport.train.loading import checkpoint_tensors

        model.to_empty(device=device)
        with torch.no_grad():
            for module in model.modules():  # buffers no checkpoint holds: transformers computes them
                if getattr(module, "_non_persistent_buffers_set", None):
                    model._init_weights(module)  # type: ignore[operator]
        full = checkpoint_tensors(self.path) if dist.get_rank() == 0 else {}
        if full:
            _alias_tied(model, full)
        set_model_state_dict(
            model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        )
        del full

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        # Reduce-scatter only on the mini-batch's last backward; before it, gradients stay unsharded.
        model.set_requires_gradient_sync(last)  # type: ignore[operator]
        return contextlib.nullcontext()

    def reduce(self, model: torch.nn.Module) -> None:
        """Nothing left to do: the last backward reduce-scattered the gradients."""

    def data_parallel(self) -> tuple[int, Any]:
        """The reduce-scatter averages over the mesh: all ``world`` ranks."""
        return self.world, None

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
