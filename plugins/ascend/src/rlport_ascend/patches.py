"""The transformers patches of MindSpeed-RL's verl_npu, declared as data.

verl_npu (and verl's ``verl/models/transformers/npu_patch.py``) assign torch_npu's fused RMSNorm,
SwiGLU and rotary ops into transformers' Qwen2 and Qwen3-MoE modules when imported. Here each is a
:class:`~rlport.types.PatchSpec` the core applies, version-gates, verifies, reports and reverts; the
replacements are in :mod:`rlport_ascend.kernels`.

Version range: the targets were read in transformers 5.24.0 (``Qwen2RMSNorm.forward(self,
hidden_states)``, ``Qwen2MLP.forward(self, x)`` with ``gate_proj``/``up_proj``/``down_proj``/``act_fn``,
``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`` called by name from the attention forward;
the same in ``modeling_qwen3_moe``). transformers 4.x's ``apply_rotary_pos_emb`` also takes
``position_ids``, so 4.x is outside the range. Qwen3-MoE's routed experts are one fused
``Qwen3MoeExperts`` module in 5.x, dispatched through transformers' experts interface; verl's grouped-matmul
replacement of the whole sparse block is not ported (it changes the block's structure, not one op).
"""

from __future__ import annotations

from rlport.types import PatchSpec

TRANSFORMERS = ">=5.24,<6"
UPSTREAM = (
    "MindSpeed-RL verl_npu 'NPU Patch Summary'; verl verl/models/transformers/npu_patch.py; "
    "transformers hub kernels (integrations/hub_kernels.py, use_kernel_forward_from_hub)"
)
REMOVE_WHEN = (
    "transformers' kernels hub serves {what} for the 'npu' device (use_kernel_forward_from_hub"
    "('{hub}') resolves an Ascend kernel), so model.kernelize() does this without a patch"
)

_MODELS = (
    ("transformers.models.qwen2.modeling_qwen2", "Qwen2"),
    ("transformers.models.qwen3_moe.modeling_qwen3_moe", "Qwen3Moe"),
)


def _spec(target: str, replacement: str, reason: str, what: str, hub: str) -> PatchSpec:
    return PatchSpec(
        target=target,
        replacement=replacement,
        action="wrapped",
        distribution="transformers",
        versions=TRANSFORMERS,
        reason=reason,
        upstream=UPSTREAM,
        remove_when=REMOVE_WHEN.format(what=what, hub=hub),
    )


def transformers_patches() -> list[PatchSpec]:
    """RMSNorm, MLP and rotary embedding of Qwen2 and Qwen3-MoE, each through its fused torch_npu op."""
    specs = []
    for module, prefix in _MODELS:
        specs += [
            _spec(
                f"{module}:{prefix}RMSNorm.forward",
                "rlport_ascend.kernels:rms_norm",
                "one fused torch_npu.npu_rms_norm instead of five elementwise kernels per norm",
                "RMSNorm",
                "RMSNorm",
            ),
            _spec(
                f"{module}:{prefix}MLP.forward",
                "rlport_ascend.kernels:swiglu_mlp",
                "torch_npu.npu_swiglu fuses the SiLU gate and the product of the gated MLP",
                "the SwiGLU MLP",
                "SwiGLU",
            ),
            _spec(
                f"{module}:apply_rotary_pos_emb",
                "rlport_ascend.kernels:rotary",
                "torch_npu.npu_rotary_mul applies the rotary embedding in one kernel per tensor",
                "apply_rotary_pos_emb",
                "rotary_pos_emb",
            ),
        ]
    return specs
