"""Wrappers that route transformers' Qwen2 / Qwen3-MoE building blocks through torch_npu's fused ops.

Each is a ``wrapper(original) -> replacement`` for a ``wrapped`` :class:`~rlport.types.PatchSpec`
(see :mod:`rlport_ascend.patches`). The replacement calls the fused op only for tensors on the NPU
(``DEVICE``) and otherwise calls the original, so a model kept on the host (a reference model, a test)
computes exactly what transformers computes. Which op replaces what (verl's
``verl/models/transformers/npu_patch.py`` does the same by assignment):

- ``*RMSNorm.forward`` -> ``torch_npu.npu_rms_norm(x, weight, epsilon=eps)[0]``;
- ``*MLP.forward`` (SiLU-gated) -> ``down_proj(torch_npu.npu_swiglu(cat([gate_proj(x), up_proj(x)], -1)))``,
  since ``npu_swiglu`` splits its input in two and returns ``silu(first) * second``;
- ``apply_rotary_pos_emb`` -> ``torch_npu.npu_rotary_mul(x, cos, sin)`` for q and k, which computes
  ``x * cos + rotate_half(x) * sin``.

The op contracts are the docstrings shipped in torch_npu 2.13.0 (``torch_npu/_op_plugin_docs.py``):
``npu_rms_norm`` needs gamma in the input's dtype, ``npu_rotary_mul`` takes 4-D tensors and documents
cos/sin in [-1, 1] (a rope scaling whose attention factor exceeds 1 is outside what it documents); a call
outside a contract keeps the original.

torch_npu is imported when a wrapper is applied (the plugin is active, so it loads), never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DEVICE = "npu"
SILU = frozenset({"silu", "swish"})


def _torch_npu() -> Any:
    import torch_npu

    return torch_npu


def rms_norm(original: Callable[..., Any]) -> Callable[..., Any]:
    """``RMSNorm.forward(self, hidden_states)`` through ``npu_rms_norm``."""
    op = _torch_npu().npu_rms_norm

    def forward(self: Any, hidden_states: Any) -> Any:
        # the op needs gamma in the input's dtype (a float32 residual into a bfloat16 norm keeps the original)
        if hidden_states.device.type != DEVICE or self.weight.dtype != hidden_states.dtype:
            return original(self, hidden_states)
        return op(hidden_states, self.weight, epsilon=self.variance_epsilon)[0]

    return forward


def swiglu_mlp(original: Callable[..., Any]) -> Callable[..., Any]:
    """``MLP.forward(self, x)`` (``down(act(gate(x)) * up(x))``) through ``npu_swiglu`` when the
    activation is SiLU; any other activation keeps the original."""
    torch_npu = _torch_npu()
    import torch

    def forward(self: Any, x: Any) -> Any:
        if x.device.type != DEVICE or getattr(self.config, "hidden_act", None) not in SILU:
            return original(self, x)
        gate_up = torch.cat([self.gate_proj(x), self.up_proj(x)], dim=-1)
        return self.down_proj(torch_npu.npu_swiglu(gate_up, dim=-1))

    return forward


def rotary(original: Callable[..., Any]) -> Callable[..., Any]:
    """``apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`` through ``npu_rotary_mul``."""
    op = _torch_npu().npu_rotary_mul

    def apply_rotary_pos_emb(q: Any, k: Any, cos: Any, sin: Any, unsqueeze_dim: int = 1) -> Any:
        if q.device.type != DEVICE or q.dim() != 4 or cos.dim() != 3:  # the op takes 4-D x, cos, sin
            return original(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return op(q, cos, sin).to(q.dtype), op(k, cos, sin).to(k.dtype)

    return apply_rotary_pos_emb
