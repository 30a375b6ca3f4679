"""Hugging Face <-> megatron-core through mbridge (the bridge verl uses): the GPT model built from
the Hugging Face config, its weights loaded from the Hugging Face folder, and exported back as
``(Hugging Face name, full tensor)`` pairs (tensor-parallel shards gathered) for the engine and
for checkpoints. No name map lives here: mbridge's per-architecture bridge knows the names and
layouts (fused QKV, gate+up), and megatron-core's own layer spec knows how its layer norms are named.

mbridge builds the model with Transformer Engine's layer spec, whose layer norms are fused into the
next linear layer (``self_attention.linear_qkv.layer_norm_weight``). Where Transformer Engine is not
installed (this CPU machine, or a GPU without it), :func:`make_bridge` uses megatron-core's local
spec instead, whose layer norms are modules of their own (``input_layernorm.weight``): the local
spec's ``sharded_state_dict_keys_map`` (megatron-core keeps it so local and Transformer Engine
checkpoints load into each other) renames them to the fused names before the bridge sees them.

Building on the host (``device="cpu"``) is for the conversion alone: megatron-core's forward pass
needs an accelerator's kernels, so the driver refuses the strategy on the host before any work
(the reference's ``rlport_unsupported_strategies``).
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Iterator
from typing import Any

import torch

from rlport.extras import import_optional

PURPOSE = "actor.strategy=megatron"


def transformer_engine_installed() -> bool:
    """Whether Transformer Engine's PyTorch module can be found (nothing is imported)."""
    try:
        return importlib.util.find_spec("transformer_engine.pytorch") is not None
    except ModuleNotFoundError:
        return False


class LocalSpecNames:
    """Mixed into an mbridge bridge class: megatron-core's local layer spec, and its parameter names
    seen by the bridge under the Transformer Engine spec's names (the spec's own keys map)."""

    _key_map: dict[str, str]

    def _get_transformer_layer_spec(self, vp_stage: int | None = None) -> Any:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

        spec = get_gpt_decoder_block_spec(
            self.config,  # type: ignore[attr-defined]
            use_transformer_engine=False,
            normalization=self.config.normalization,  # type: ignore[attr-defined]
            vp_stage=vp_stage,
        )
        self.has_vp_stage = True
        self._key_map = {}
        for layer in spec.layer_specs:
            self._key_map.update(layer.submodules.sharded_state_dict_keys_map)
        return spec

    def fused_name(self, name: str) -> str:
        """``decoder.layers.0.input_layernorm.weight`` ->
        ``decoder.layers.0.self_attention.linear_qkv.layer_norm_weight``; others unchanged."""
        for local, fused in getattr(self, "_key_map", {}).items():
            marker = "." + local
            if marker in name:
                return name.replace(marker, "." + fused, 1)
        return name

    def _weight_name_mapping_mcore_to_hf(self, mcore_weights_name: str) -> list[str]:
        return super()._weight_name_mapping_mcore_to_hf(self.fused_name(mcore_weights_name))  # type: ignore[misc]

    def _weight_to_hf_format(self, mcore_weights_name: str, mcore_weights: Any) -> Any:
        return super()._weight_to_hf_format(self.fused_name(mcore_weights_name), mcore_weights)  # type: ignore[misc]

    def _weight_to_mcore_format(self, mcore_weights_name: str, hf_weights: Any) -> Any:
        return super()._weight_to_mcore_format(self.fused_name(mcore_weights_name), hf_weights)  # type: ignore[misc]

    def _weight_split_across_tp(self, mcore_weights_name: str, *args: Any) -> Any:
        return super()._weight_split_across_tp(self.fused_name(mcore_weights_name), *args)  # type: ignore[misc]

    def _weight_merge_across_tp(self, mcore_weights_name: str, *args: Any) -> Any:
        return super()._weight_merge_across_tp(self.fused_name(mcore_weights_name), *args)  # type: ignore[misc]


def with_rope_theta(hf_config: Any) -> Any:
    """``hf_config`` with ``rope_theta`` as an attribute: transformers 5 keeps it in
    ``rope_parameters``, where mbridge 0.15 does not look (a copy; the caller's is unchanged)."""
    if hasattr(hf_config, "rope_theta"):
        return hf_config
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        return hf_config
    out = copy.deepcopy(hf_config)
    out.rope_theta = params["rope_theta"]
    return out


def make_bridge(hf_config: Any, *, dtype: torch.dtype, local_spec: bool | None = None) -> Any:
    """mbridge's bridge for ``hf_config``'s architecture (``AutoBridge.from_config``), with
    megatron-core's local spec where ``local_spec`` (default: Transformer Engine missing). Megatron's
    parallel state must be initialised first (:func:`initialize_parallel`)."""
    auto = import_optional("mbridge", "megatron", purpose=PURPOSE).AutoBridge
    import_optional("megatron.core", "megatron", purpose=PURPOSE)
    hf_config = with_rope_theta(hf_config)
    # The architecture's bridge class, found through AutoBridge on an untied copy of the config:
    # mbridge writes a tied model's name mapping into the class itself (``_DIRECT_MAPPING``), so each
    # bridge here gets a subclass with its own copy of the mapping.
    untied = copy.deepcopy(hf_config)
    untied.tie_word_embeddings = False
    cls = type(auto.from_config(untied, dtype=dtype))
    local = local_spec if local_spec is not None else not transformer_engine_installed()
    bases = (LocalSpecNames, cls) if local else (cls,)
    name = ("Local" if local else "") + cls.__name__
    return type(name, bases, {"_DIRECT_MAPPING": dict(cls._DIRECT_MAPPING)})(hf_config, dtype=dtype)


def initialize_parallel(
    *,
    tensor: int = 1,
    pipeline: int = 1,
    virtual_pipeline: int | None = None,
    context: int = 1,
    expert: int = 1,
) -> None:
    """Megatron's process groups over the default ``torch.distributed`` group (already up)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor,
        pipeline_model_parallel_size=pipeline,
        virtual_pipeline_model_parallel_size=virtual_pipeline,
        context_parallel_size=context,
        expert_model_parallel_size=expert,
    )


def build_models(bridge: Any, hf_path: str, *, device: str) -> list[torch.nn.Module]:
    """The model chunks (one per virtual pipeline stage) on ``device``, loaded from ``hf_path``.

    On a device the chunks are built in place (mbridge moves them to the current device); on the
    host they are built on the meta device and materialised empty on the host before the weights
    are loaded, since mbridge otherwise moves them to the current accelerator."""
    on_host = torch.device(device).type == "cpu"
    if on_host:
        bridge.set_extra_args(use_cpu_initialization=True)
    half = bridge.dtype in (torch.bfloat16, torch.float16)
    models = bridge.get_model(
        wrap_with_ddp=False,
        bf16=bridge.dtype is torch.bfloat16,
        fp16=bridge.dtype is torch.float16,
        init_model_with_meta_device=on_host,
    )
    if on_host:
        models = [m.to_empty(device="cpu") for m in models]
        if half:
            models = [m.to(bridge.dtype) for m in models]
    bridge.load_weights(models, hf_path)
    return models


def hf_weights(bridge: Any, models: list[torch.nn.Module]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(Hugging Face name, full tensor)`` per Hugging Face weight, one at a time (every rank of
    the model-parallel group must iterate all: the shards are gathered)."""
    return bridge.export_weights(models)


__all__ = ["build_models", "hf_weights", "initialize_parallel", "make_bridge", "transformer_engine_installed"]
