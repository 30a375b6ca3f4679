"""What every strategy is (:class:`Strategy`), what the ones that hold the whole model on each rank
share (:class:`Local`), and the strategy names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from rlport.train.checkpoint import OPTIMIZER_FILE, missing_state

#: every strategy ``actor.strategy`` can name, and those this version builds.
KNOWN = ("replicated", "ddp", "fsdp", "megatron")
BUILT = KNOWN


class Strategy(Protocol):
    name: str
    #: every forward is a collective (FSDP gathers the parameters in each), so all ranks must run
    #: as many micro-batches; the trainer evens them out (:func:`rlport.train.models.micro_batches.even_chunks`)
    lockstep_forward: bool

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train (called once, after the process group is up)."""

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Context for one micro-batch's backward; ``last`` is the mini-batch's final one."""

    def reduce(self, model: torch.nn.Module) -> None:
        """Average the accumulated gradients over the ranks (a no-op where backward did it)."""

    def data_parallel(self) -> tuple[int, Any]:
        """The ranks :meth:`reduce` (or backward) averages the gradients over, and their process
        group (``None``: the default one); the loss is scaled by their number
        (:mod:`rlport.train.algos.loss_agg`). Called after :meth:`wrap`."""

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """``(Hugging Face name, full tensor)`` per parameter, one at a time, on every rank."""

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's state dict, unsharded, on CPU (every rank must call it; only rank 0
        is sure to receive it)."""

    def save_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path, rank: int
    ) -> None:
        """Write what a resume needs beyond the Hugging Face weights into checkpoint ``folder``:
        the optimizer state (and, for a sharded strategy, the model's shards). Every rank calls it."""

    def load_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path
    ) -> None:
        """Restore what :meth:`save_training_state` wrote into ``folder`` (every rank calls it)."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module inside a DDP wrapper (FSDP2 wraps in place), or the one a wrapper
    names as ``hf_module`` (megatron's)."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return getattr(model, "hf_module", model)


class Local:
    """Full weights and optimizer state for strategies where every rank holds the whole model."""

    world: int
    lockstep_forward = False  # a forward needs no other rank

    def data_parallel(self) -> tuple[int, Any]:
        """Every rank is a replica: gradients are averaged over all ``world`` ranks."""
        return self.world, None

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, p.detach()) for name, p in unwrap(model).named_parameters())

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}

    def save_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path, rank: int
    ) -> None:
        """Every rank holds the same optimizer state: rank 0 writes ``optimizer.pt``."""
        if rank == 0:
            torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)

    def load_training_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path
    ) -> None:
        path = folder / OPTIMIZER_FILE
        if not path.is_file():
            raise missing_state(folder, OPTIMIZER_FILE, self.name)  # type: ignore[attr-defined]
        # read on the host by design: load_state_dict moves each state tensor to its parameter's device
        optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


__all__ = ["BUILT", "KNOWN", "Local", "Strategy", "unwrap"]
