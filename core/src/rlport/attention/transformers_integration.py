"""``attn_implementation="rlport"`` for transformers models.

:func:`register` adds an attention function and a mask builder named ``"rlport"`` to transformers'
``AttentionInterface`` and ``AttentionMaskInterface``. The mask builder is transformers' own
``sdpa_mask`` (a boolean ``(B, 1, Lq, Lk)`` mask, or ``None`` where plain causal attention suffices),
so padding, sliding windows and packed sequences given by ``position_ids`` are masked exactly as
transformers' ``"sdpa"`` implementation masks them.

The attention function resolves a backend once per distinct call shape (dtype, head dim, heads, kv
heads, causality, packing, device) through ``runtime.attention_backend(spec)`` and keeps it in a dict;
later calls are a tuple build and a dict lookup, with no hook call. It mirrors transformers'
``sdpa_attention_forward``:

- the layer's causality is the ``is_causal`` keyword if given, else ``module.is_causal`` (default
  ``True``); it is applied only when no mask was built and ``Lq > 1`` (the mask already encodes it);
- with no mask, ``Lq > 1`` and more keys than queries (prefill into an empty static cache) the keys are
  cut to the first ``Lq``, whose positions line up with the queries;
- ``position_bias`` (T5-style) is folded into an additive mask; ``softcap`` and attention dropout are
  refused with :class:`~rlport.errors.UnsupportedAttention` (the backend protocol has neither).

Packed input given as flash-attention keywords (``cu_seq_lens_q``/``cu_seq_lens_k``/``max_length_q``/
``max_length_k``, as ``DataCollatorWithFlattening`` produces, batch size 1) goes to the backend's
``forward_varlen`` with a ``varlen=True`` spec. The window of a sliding-window layer is not part of the
spec: the mask builder already encodes it.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import torch

from rlport.errors import UnsupportedAttention
from rlport.types import AttentionBackend, AttentionSpec

NAME = "rlport"


class _Resolver(Protocol):
    def attention_backend(self, spec: AttentionSpec) -> AttentionBackend: ...


_state: dict[str, Any] = {"runtime": None, "by_init": False}
_backends: dict[tuple[Any, ...], AttentionBackend] = {}


def register(runtime: _Resolver | None = None, *, by_init: bool = False) -> str:
    """Register ``"rlport"`` with transformers (idempotent) and return the name.

    ``runtime`` answers ``attention_backend(spec)``; ``None`` means :func:`rlport.current` at the first
    attention call. Registering again with a different runtime forgets the backends resolved so far.
    ``by_init`` marks the registration ``rlport.init()`` makes, which ``rlport.bootstrap.reset()``
    undoes; an explicit call outlives a reset (models loaded with it keep working).
    """
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if runtime is not _state["runtime"]:
        _backends.clear()
    _state["runtime"] = runtime
    _state["by_init"] = by_init
    AttentionInterface.register(NAME, rlport_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def is_registered() -> bool:
    """True when transformers' ``"rlport"`` attention is this module's function (imports nothing
    when transformers' modeling code is not loaded: then nothing is registered)."""
    if "transformers.modeling_utils" not in sys.modules:
        return False
    from transformers import AttentionInterface

    return AttentionInterface._global_mapping.get(NAME) is rlport_attention_forward


def registered_by_init() -> bool:
    """True when the current registration is the one ``rlport.init()`` made."""
    return bool(_state["by_init"]) and is_registered()


def unregister() -> None:
    """Remove ``"rlport"`` from transformers' interfaces and forget the backends (for tests).

    transformers has no public unregister; its class-level ``_global_mapping`` holds what
    ``register`` added."""
    from transformers import AttentionInterface, AttentionMaskInterface

    if is_registered():
        AttentionInterface._global_mapping.pop(NAME, None)
        AttentionMaskInterface._global_mapping.pop(NAME, None)
    _state["runtime"] = None
    _state["by_init"] = False
    reset()


def reset() -> None:
    """Forget the resolved backends (call after ``rlport.bootstrap.reset()``)."""
    _backends.clear()


def resolved() -> dict[tuple[Any, ...], AttentionBackend]:
    """A copy of the backends resolved so far, keyed by call shape (for the summary and tests)."""
    return dict(_backends)


def _resolve(key: tuple[Any, ...]) -> AttentionBackend:
    dtype, head_dim, heads, kv_heads, causal, varlen, device_type = key
    spec = AttentionSpec(
        dtype=str(dtype).removeprefix("torch."),
        head_dim=head_dim,
        num_heads=heads,
        num_kv_heads=kv_heads,
        causal=causal,
        varlen=varlen,
        device_type=device_type,
    )
    runtime = _state["runtime"]
    if runtime is None:
        import rlport

        runtime = rlport.current()
    backend = runtime.attention_backend(spec)
    if backend is None:
        raise UnsupportedAttention(
            f"no attention backend serves {spec}",
            fix="run `rlport info` to see the active plugins, or load the model with attn_implementation='sdpa'",
        )
    _backends[key] = backend
    return backend


def rlport_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: ``query (B, H, Lq, D)``, ``key``/``value`` ``(B, Hkv, Lk, D)``
    in, ``((B, Lq, H, D), None)`` out."""
    if dropout > 0.0 or kwargs.get("softcap") is not None:
        _refuse(dropout, kwargs.get("softcap"))
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    qs = query.shape
    varlen = kwargs.get("cu_seq_lens_q") is not None and qs[0] == 1 and kwargs.get("position_bias") is None
    cache_key = (query.dtype, qs[3], qs[1], key.shape[1], bool(is_causal), varlen, query.device.type)
    backend = _backends.get(cache_key)
    if backend is None:
        backend = _resolve(cache_key)

    if varlen:
        return _varlen(backend, query, key, value, scaling, bool(is_causal), kwargs), None

    q_len = qs[2]
    causal = q_len > 1 and attention_mask is None and bool(is_causal)
    if causal and key.shape[2] > q_len:
        # Empty static cache at prefill: the first q_len key slots hold these queries' keys.
        key = key[:, :, :q_len]
        value = value[:, :, :q_len]
    position_bias = kwargs.get("position_bias")
    if position_bias is not None:
        attention_mask = _fold_position_bias(position_bias, attention_mask, causal, query, key)
        causal = False
    out = backend.forward(query, key, value, causal=causal, scale=scaling, mask=attention_mask)
    return out.transpose(1, 2).contiguous(), None


def _varlen(
    backend: AttentionBackend,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
    causal: bool,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    cu_q = kwargs["cu_seq_lens_q"]
    cu_k = kwargs.get("cu_seq_lens_k", cu_q)
    max_q = kwargs.get("max_length_q") or query.shape[2]
    max_k = kwargs.get("max_length_k") or key.shape[2]
    out = backend.forward_varlen(
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=int(max_q),
        max_seqlen_k=int(max_k),
        causal=causal,
        scale=scaling,
    )
    return out[None]


def _fold_position_bias(
    bias: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    query: torch.Tensor,
    key: torch.Tensor,
) -> torch.Tensor:
    """One additive mask: the bias where attention is allowed, the dtype's minimum elsewhere."""
    lowest = torch.finfo(key.dtype).min
    if mask is None:
        if not causal:
            return bias.contiguous()
        q_len, k_len = query.shape[2], key.shape[2]
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=key.device).tril()
        return torch.where(allowed, bias[..., :k_len], lowest).contiguous()
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, lowest).contiguous()
    return (bias + mask).contiguous()


def _refuse(dropout: float, softcap: Any) -> None:
    if softcap is not None:
        raise UnsupportedAttention(
            f"attn_implementation='rlport' got softcap={softcap}; attention backends take no logit soft-capping",
            fix="load the model with attn_implementation='eager' (or 'sdpa' if the model allows it)",
        )
    raise UnsupportedAttention(
        f"attn_implementation='rlport' got attention dropout {dropout}; attention backends take no dropout",
        fix="set config.attention_dropout = 0.0 (usual for RL post-training), or call model.eval()",
    )
