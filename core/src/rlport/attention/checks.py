"""Input checks for attention backends, each failing with an :class:`UnsupportedAttention` that names
the value, what was expected, and the fix.

The checks run on every call, so the common path is a handful of attribute reads; the error text is
only built when something is wrong.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch

from rlport.errors import UnsupportedAttention

FLOAT_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16, torch.float64})
INDEX_DTYPES = frozenset({torch.int32, torch.int64})


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_tensors(q: Any, k: Any, v: Any) -> None:
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        raise UnsupportedAttention(
            f"attention inputs must be torch tensors, got q={type(q).__name__}, k={type(k).__name__}, "
            f"v={type(v).__name__}",
            fix="pass torch.Tensor q, k, v",
        )


def check_dense(q: Any, k: Any, v: Any, mask: Any) -> None:
    """Check ``q (B,H,Lq,D)``, ``k``/``v`` ``(B,Hkv,Lk,D)`` and an optional mask; raise on anything else."""
    _check_tensors(q, k, v)
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise UnsupportedAttention(
            f"forward expects 4-D q (batch, heads, q_len, head_dim) and k/v (batch, kv_heads, k_len, head_dim), "
            f"got q{_shape(q)}, k{_shape(k)}, v{_shape(v)}",
            fix="for packed (total, heads, head_dim) input call forward_varlen(...) with cu_seqlens; otherwise "
            "reshape with x.view(batch, seq, heads, head_dim).transpose(1, 2)",
        )
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise UnsupportedAttention(
            f"k and v must be (batch={q.shape[0]}, kv_heads, k_len, head_dim={q.shape[3]}) like q{_shape(q)}, "
            f"got k{_shape(k)}, v{_shape(v)}",
            fix="use one batch size and one head_dim for q, k and v (project v to head_dim before attention)",
        )
    _check_heads(q.shape[1], k.shape[1])
    _check_dtypes(q, k, v)
    if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
        raise UnsupportedAttention(
            f"mask dtype {mask.dtype} must be torch.bool (True = attend) or the query dtype {q.dtype} (additive)",
            fix=f"pass mask.to({q.dtype}) for an additive mask, or a boolean mask",
        )


def check_dense_fast(q: Any, k: Any, v: Any, mask: Any) -> None:
    """:func:`check_dense` for the hot path: backends call it per layer per step, so the common case is
    a handful of reads of shapes and dtypes; only odd input pays for :func:`check_dense`, which raises
    the error that names it."""
    try:
        qs, ks, dt = q.shape, k.shape, q.dtype
        bad = (
            len(qs) != 4
            or len(ks) != 4
            or ks != v.shape
            or ks[0] != qs[0]
            or ks[3] != qs[3]
            or not ks[1]
            or qs[1] % ks[1]
            or dt not in FLOAT_DTYPES
            or k.dtype is not dt
            or v.dtype is not dt
            or (mask is not None and mask.dtype is not dt and mask.dtype is not torch.bool)
        )
    except (AttributeError, TypeError):
        bad = True
    if bad:
        check_dense(q, k, v, mask)


def check_packed(q: Any, k: Any, v: Any) -> None:
    """Check packed ``q (total_q,H,D)`` and ``k``/``v`` ``(total_k,Hkv,D)``."""
    _check_tensors(q, k, v)
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise UnsupportedAttention(
            f"forward_varlen expects packed 3-D q (total_q, heads, head_dim) and k/v (total_k, kv_heads, head_dim), "
            f"got q{_shape(q)}, k{_shape(k)}, v{_shape(v)}",
            fix="for padded (batch, heads, len, head_dim) input call forward(...); to pack, drop the padding with "
            "x[attention_mask.bool()] on (batch, len, heads, head_dim)",
        )
    if k.shape != v.shape or k.shape[2] != q.shape[2]:
        raise UnsupportedAttention(
            f"k and v must be (total_k, kv_heads, head_dim={q.shape[2]}) like q{_shape(q)}, "
            f"got k{_shape(k)}, v{_shape(v)}",
            fix="use one head_dim for q, k and v and pack k and v identically",
        )
    _check_heads(q.shape[1], k.shape[1])
    _check_dtypes(q, k, v)


def check_cu_seqlens(name: str, cu: Any, total: int, max_seqlen: int) -> list[int]:
    """Check cumulative sequence lengths against the packed length; return them as a list."""
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype not in INDEX_DTYPES or cu.numel() < 2:
        desc = f"{cu.dtype} of shape {_shape(cu)}" if isinstance(cu, torch.Tensor) else type(cu).__name__
        raise UnsupportedAttention(
            f"{name} must be a 1-D int32/int64 tensor [0, len_0, len_0+len_1, ...] with at least 2 entries, "
            f"got {desc}",
            fix=f"build it with torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32) as {name}",
        )
    values: list[int] = cu.tolist()
    if values[0] != 0 or any(b < a for a, b in pairwise(values)):
        raise UnsupportedAttention(
            f"{name} must start at 0 and never decrease, got {values}",
            fix=f"build {name} as the cumulative sum of the (non-negative) sequence lengths, starting with 0",
        )
    if values[-1] > total:
        raise UnsupportedAttention(
            f"{name} ends at {values[-1]} but the packed tensor has only {total} tokens",
            fix=f"make {name}[-1] equal the number of packed tokens ({total})",
        )
    longest = max(b - a for a, b in pairwise(values))
    if longest > max_seqlen:
        raise UnsupportedAttention(
            f"a sequence in {name} has {longest} tokens, more than max_seqlen={max_seqlen}",
            fix=f"pass max_seqlen = int((cu[1:] - cu[:-1]).max()) = {longest}",
        )
    return values


def check_varlen(
    q: Any, k: Any, v: Any, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int
) -> tuple[list[int], list[int]]:
    """Check a packed call (:func:`check_packed`, both :func:`check_cu_seqlens`, one sequence count);
    return the query and key sequence starts as lists."""
    check_packed(q, k, v)
    starts_q = check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q)
    starts_k = check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)
    if len(starts_q) != len(starts_k):
        raise UnsupportedAttention(
            f"cu_seqlens_q describes {len(starts_q) - 1} sequences but cu_seqlens_k {len(starts_k) - 1}",
            fix="pass one cu_seqlens entry per sequence for both queries and keys",
        )
    return starts_q, starts_k


def _check_heads(heads: int, kv_heads: int) -> None:
    if kv_heads == 0 or heads % kv_heads != 0:
        raise UnsupportedAttention(
            f"query heads ({heads}) must be a multiple of key/value heads ({kv_heads}) for grouped-query attention",
            fix="use num_attention_heads divisible by num_key_value_heads (e.g. num_key_value_heads = "
            f"{_divisor_hint(heads, kv_heads)})",
        )


def _divisor_hint(heads: int, kv_heads: int) -> int:
    divisors = [d for d in range(1, heads + 1) if heads % d == 0] or [1]
    return min(divisors, key=lambda d: (abs(d - kv_heads), d))


def _check_dtypes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dtype not in FLOAT_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise UnsupportedAttention(
            f"q, k, v must share one floating dtype among float32/bfloat16/float16/float64, "
            f"got q={q.dtype}, k={k.dtype}, v={v.dtype}",
            fix="cast all three with .to(torch.bfloat16) (or the model's dtype) before attention",
        )
