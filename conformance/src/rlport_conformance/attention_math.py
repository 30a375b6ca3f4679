"""Attention inputs and references for the attention cases.

The reference is explicit attention in float64 on the host, with the semantics every backend
shares (see ``rlport.attention.sdpa``): bottom-right-aligned causality, kv head ``h // (H // Hkv)``
for query head ``h``, a sliding window of ``w`` keys ending at the query's position, rows that may
attend no key give zeros. ``plain_torch`` is the same math in the input dtype on the device: what
"plain PyTorch in the same dtype" makes, for the tolerance rule.
"""

from __future__ import annotations

import math
import zlib

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def seed_of(case_id: str) -> int:
    """A stable per-case seed (the same inputs on every machine and run)."""
    return zlib.crc32(case_id.encode())


def randn(shape: tuple[int, ...], *, seed: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Normal samples made on the host in float32 (identical everywhere), then cast and moved."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype).to(device)


def allowed_mask(lq: int, lk: int, *, causal: bool, window: int | None) -> torch.Tensor:
    """Boolean ``(lq, lk)``: which keys each query may attend (bottom-right aligned)."""
    pos = torch.arange(lq)[:, None] + (lk - lq)
    keys = torch.arange(lk)[None, :]
    if causal:
        mask = keys <= pos
        if window is not None:
            mask &= keys > pos - window
        return mask
    if window is not None:
        return (keys - pos).abs() < window
    return torch.ones(lq, lk, dtype=torch.bool)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None,
    window: int | None,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    heads, kv_heads = q.shape[1], k.shape[1]
    group = heads // kv_heads
    index = torch.arange(heads, device=q.device) // group
    k, v = k[:, index], v[:, index]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    allowed = allowed_mask(q.shape[2], k.shape[2], causal=causal, window=window).to(q.device)
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            scores = scores + mask.to(scores.dtype)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # rows with no key
    return probs @ v


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Float64 attention on the host over ``(B, H, Lq, D)`` / ``(B, Hkv, Lk, D)``."""
    up = [t.detach().to("cpu", torch.float64) for t in (q, k, v)]
    m = None if mask is None else mask.detach().to("cpu")
    if m is not None and m.dtype != torch.bool:
        m = m.to(torch.float64)
    return _attend(*up, causal=causal, scale=scale, window=window, mask=m)


def plain_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same attention in the inputs' own dtype and device."""
    return _attend(q, k, v, causal=causal, scale=scale, window=window, mask=mask)


def plain_error(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ref: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    window: int | None = None,
    mask: torch.Tensor | None = None,
) -> float:
    """Plain torch's error against ``ref`` in the inputs' dtype: the larger of two reduction orders
    (keys as given, and reversed, with the masks following them). One order alone is sometimes lucky
    (float32 decode rows: up to 3x below the typical error); two make the rule's baseline stable."""
    natural = max_error(plain_torch(q, k, v, causal=causal, scale=scale, window=window, mask=mask), ref)
    lk = k.shape[2]
    order = torch.arange(lk - 1, -1, -1, device=k.device)
    allowed = allowed_mask(q.shape[2], lk, causal=causal, window=window).to(q.device)[:, order.cpu()]
    combined: torch.Tensor = allowed
    if mask is not None:
        flipped = mask[..., order.to(mask.device)].to(q.device)
        combined = (
            allowed & flipped
            if mask.dtype == torch.bool
            else flipped.to(q.dtype).masked_fill(~allowed, float("-inf"))
        )
    reversed_keys = _attend(
        q, k[:, :, order], v[:, :, order], causal=False, scale=scale, window=None, mask=combined
    )
    return max(natural, max_error(reversed_keys, ref))


#: (batch row, query row) that :func:`make_mask` ("bool") leaves with no key to attend.
EMPTY_ROW = (1, 5)


def make_mask(kind: str, batch: int, lq: int, lk: int, *, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A ``(batch, 1, lq, lk)`` mask of ``kind`` "bool" (True = attend; drawn independently per batch
    row, so rows differ; every query keeps its own position except :data:`EMPTY_ROW`, which attends
    nothing) or "float" (additive in ``dtype``: normal biases, a fifth of the entries ``-inf``, never
    a whole row)."""
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand((batch, 1, lq, lk), generator=gen) < 0.7
    diagonal = torch.zeros(lq, lk, dtype=torch.bool)
    diagonal[torch.arange(lq), torch.arange(lq) + (lk - lq)] = True
    keep |= diagonal
    if kind == "bool":
        if batch > EMPTY_ROW[0] and lq > EMPTY_ROW[1]:
            keep[EMPTY_ROW[0], :, EMPTY_ROW[1]] = False
        return keep
    if kind == "float":
        bias = torch.randn((batch, 1, lq, lk), generator=gen)
        blocked = (torch.rand((batch, 1, lq, lk), generator=gen) < 0.2) & ~diagonal
        return bias.masked_fill(blocked, float("-inf")).to(dtype)
    raise ValueError(f"mask kind {kind!r}: expected 'bool' or 'float'")


def max_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Max absolute difference in float64 (inf when ``out`` has a non-finite value or a wrong shape)."""
    if tuple(out.shape) != tuple(ref.shape):
        return math.inf
    diff = (out.detach().to("cpu", torch.float64) - ref).abs()
    if not torch.isfinite(diff).all():
        return math.inf
    return float(diff.max()) if diff.numel() else 0.0


def rounding_error(ref: torch.Tensor, dtype: torch.dtype) -> float:
    """How far the reference moves when rounded into ``dtype`` (after flash-attention's
    ``ref + 0.3 - 0.3``, which exposes the dtype's rounding at the output's magnitude)."""
    r = ref.to(dtype)
    return float(((r + 0.3 - 0.3).to(torch.float64) - ref).abs().max()) if ref.numel() else 0.0


def flops(batch: int, heads: int, q_len: int, k_len: int, head_dim: int, *, causal: bool) -> float:
    """flash-attention's forward FLOP count ``4 * b * lq * lk * h * d``, halved when causal."""
    total = 4.0 * batch * q_len * k_len * heads * head_dim
    return total / 2 if causal else total
