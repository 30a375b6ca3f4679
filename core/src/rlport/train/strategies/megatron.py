"""``actor.strategy=megatron``: megatron-core's GPT model, built from the Hugging Face config with
the parallel sizes of ``actor.megatron`` (verl's names: ``tensor_model_parallel_size``,
``pipeline_model_parallel_size``, ...), weights converted both ways by mbridge
(:mod:`rlport.train.strategies.megatron_bridge`).

The actor calls the model as a Hugging Face causal LM (``model(input_ids=..., attention_mask=...)
.logits``); :class:`MegatronCausalLM` answers that call with megatron-core's forward: positions from
the mask, causal attention without a mask (the actor right-pads, so padding never precedes a token
it reads), and the vocabulary-parallel logits gathered over the tensor-parallel group. Gradients are
averaged over Megatron's data-parallel group after a mini-batch's backward passes. Weights leave as
Hugging Face names and full tensors, for the weight sync and for Hugging Face checkpoints.

The forward pass needs the device's kernels: on the host only the conversion runs (tested), and the
driver refuses the strategy there before any work. ``pipeline_model_parallel_size > 1`` and
``tensor_model_parallel_size > 1`` build and convert, but training them needs Megatron's pipeline
schedule and one batch per tensor-parallel group, which the actor's loop does not drive yet; the
config check refuses them for training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import torch

from rlport.train.strategies.base import Local
from rlport.train.strategies.replicated import average_gradients


class MegatronCausalLM(torch.nn.Module):
    """megatron-core model chunks behind the Hugging Face call the actor makes; ``hf_module`` is the
    Hugging Face model (on the meta device: kept for its config and ``save_pretrained``)."""

    def __init__(self, chunks: list[torch.nn.Module], hf_module: torch.nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.chunks = torch.nn.ModuleList(chunks)
        self._hf = [hf_module]  # a list: not a submodule, so its parameters stay out of ours
        self.vocab_size = vocab_size
        self.config = hf_module.config

    @property
    def hf_module(self) -> torch.nn.Module:
        return self._hf[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False) -> Any:
        from megatron.core import parallel_state, tensor_parallel

        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = self.chunks[0](input_ids=input_ids, position_ids=position_ids, attention_mask=None)
        if parallel_state.get_tensor_model_parallel_world_size() > 1:
            logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
        return SimpleNamespace(logits=logits[..., : self.vocab_size].float())


class MegatronStrategy(Local):
    name = "megatron"

    def __init__(
        self, world: int, device_type: str, config: Any = None, *, path: str = "", backend: str = "gloo"
    ) -> None:
        self.world, self.device_type, self.path, self.backend = world, device_type, path, backend
        self.tensor = int(getattr(config, "tensor_model_parallel_size", 1) or 1)
        self.pipeline = int(getattr(config, "pipeline_model_parallel_size", 1) or 1)
        self.virtual_pipeline = getattr(config, "virtual_pipeline_model_parallel_size", None)
        self.context = int(getattr(config, "context_parallel_size", 1) or 1)
        self.expert = int(getattr(config, "expert_model_parallel_size", 1) or 1)
        self.bridge: Any = None

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        import torch.distributed as dist

        from rlport.train.strategies import megatron_bridge

        if not dist.is_initialized():  # one worker: Megatron still wants a process group
            dist.init_process_group(self.backend, store=dist.HashStore(), rank=0, world_size=1)
        megatron_bridge.initialize_parallel(
            tensor=self.tensor,
            pipeline=self.pipeline,
            virtual_pipeline=self.virtual_pipeline,
            context=self.context,
            expert=self.expert,
        )
        dtype = next(model.parameters()).dtype
        device = str(next(model.parameters()).device)
        self.bridge = megatron_bridge.make_bridge(model.config, dtype=dtype)
        chunks = megatron_bridge.build_models(self.bridge, self.path, device=device)
        model.to("meta")  # the Hugging Face copy: only its config and class are used from here on
        return MegatronCausalLM(chunks, model, int(model.config.vocab_size))

    def accumulate(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def reduce(self, model: torch.nn.Module) -> None:
        ranks, group = self.data_parallel()
        average_gradients(list(model.parameters()), ranks, group)

    def data_parallel(self) -> tuple[int, Any]:
        """Megatron's data-parallel group (all ranks while tensor and pipeline sizes are 1)."""
        from megatron.core import parallel_state

        return parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_group()

    def full_parameters(self, model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        from rlport.train.strategies.megatron_bridge import hf_weights

        return ((name, t.detach()) for name, t in hf_weights(self.bridge, list(model.chunks)))  # type: ignore[arg-type]

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.cpu() for name, t in self.full_parameters(model)}
