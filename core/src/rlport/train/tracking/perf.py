"""Training throughput a user can read: tokens per second and model FLOPs utilisation (MFU).

The FLOPs of one training pass (forward and backward) over sequences of lengths ``s_i`` (``T =
sum(s_i)`` tokens) of a dense decoder-only transformer, as verl's ``FlopsCounter`` estimates them
(``verl/utils/flops_counter.py``, ``_estimate_qwen2_flops``; the derivation is Narayanan et al.,
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC'21, appendix)::

    flops = 6 * N * T  +  12 * sum(s_i ** 2) * head_dim * num_attention_heads * num_hidden_layers

``N`` counts the parameters of the matrix multiplications: per layer the MLP
(``3 * hidden * intermediate`` for a gated MLP) and the attention projections
(``hidden * (q + k + v + o)`` widths), plus the embedding and the LM head (``2 * vocab * hidden``).
A multiply-add is 2 FLOPs and the backward pass costs twice the forward, hence 6. The second term is
attention's ``Q K^T`` and ``P V`` (``2 * 2 * s^2 * head_dim`` per head and layer in the forward,
times 3 with the backward), counted over the full ``s x s`` square as verl does.

MFU is those FLOPs over the time they took and the device's peak for the compute dtype
(:attr:`rlport.types.DeviceInfo.peak_flops`, filled by the device plugin). Where the plugin gives no
peak for the dtype, MFU is ``None`` and left out of the metrics: never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: ``perf/mfu``'s dtype key for float32 matmuls that torch runs as TF32
#: (``torch.set_float32_matmul_precision("high"|"medium")``).
TF32 = "tfloat32"


def matmul_parameters(config: Any) -> int:
    """``N``: the parameters of the model's matrix multiplications, from its Hugging Face config
    (``hidden_size``, ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``,
    ``num_key_value_heads``, ``vocab_size``, optional ``head_dim``)."""
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    mlp = 3 * hidden * int(config.intermediate_size)
    attn = hidden * (q + 2 * kv) + q * hidden
    return (mlp + attn) * int(config.num_hidden_layers) + 2 * int(config.vocab_size) * hidden


def training_flops(config: Any, seqlens: Sequence[int]) -> float:
    """FLOPs of one forward and backward pass over sequences of ``seqlens`` tokens (module
    docstring)."""
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or int(config.hidden_size) // heads)
    tokens = sum(seqlens)
    square = sum(s * s for s in seqlens)
    attention = 12 * square * head_dim * heads * int(config.num_hidden_layers)
    return 6.0 * matmul_parameters(config) * tokens + attention


def peak_key(dtype: str, float32_matmul_precision: str = "highest") -> str:
    """The :attr:`~rlport.types.DeviceInfo.peak_flops` key for compute in ``dtype``: ``tfloat32``
    for float32 when torch runs float32 matmuls in TF32, else the dtype's name."""
    if dtype == "float32" and float32_matmul_precision in ("high", "medium"):
        return TF32
    return dtype


def mfu(flops: float, seconds: float, peak_flops: Mapping[str, float], key: str) -> float | None:
    """``flops / (seconds * peak)``, or ``None`` where the peak for ``key`` is unknown."""
    peak = peak_flops.get(key)
    if not peak or seconds <= 0:
        return None
    return flops / (seconds * peak)


def update_metrics(
    config: Any,
    seqlens: Sequence[int],
    *,
    passes: int,
    seconds: float,
    peak_flops: Mapping[str, float],
    key: str,
) -> dict[str, float]:
    """``perf/update_tokens_per_s`` and (where the peak is known) ``perf/mfu`` of an actor update
    that made ``passes`` training passes over ``seqlens`` in ``seconds`` on one device."""
    out = {"perf/update_tokens_per_s": passes * sum(seqlens) / max(seconds, 1e-9)}
    value = mfu(passes * training_flops(config, seqlens), seconds, peak_flops, key)
    if value is not None:
        out["perf/mfu"] = value
    return out


__all__ = ["TF32", "matmul_parameters", "mfu", "peak_key", "training_flops", "update_metrics"]
