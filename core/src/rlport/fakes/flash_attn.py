"""A fake of the flash-attn interface (``flash_attn_func`` / ``flash_attn_varlen_func``).

The math follows the library's documented semantics, written independently of rlport's own masks:
inputs ``(batch, seqlen, heads, head_dim)`` (varlen: ``(total, heads, head_dim)`` with int32
``cu_seqlens``), causal aligned to the bottom-right corner, query ``i`` attending keys in
``[i + Sk - Sq - left, i + Sk - Sq + right]`` for ``window_size=(left, right)`` (``-1`` unbounded,
``right`` forced to 0 when causal), query head ``h`` using kv head ``h // (H // Hkv)``, rows that see
no key returning zeros. Like the real kernels it accepts only fp16/bf16, head dims up to 256,
``H % Hkv == 0`` and a contiguous last dimension, and leaves varlen rows past ``cu_seqlens_q[-1]``
unwritten (filled with NaN here, so a caller that forgets to zero them is caught).

Usage in a test::

    fake = FakeFlashAttn()
    monkeypatch.setitem(sys.modules, "flash_attn", fake.module("flash_attn"))
    ...
    assert fake.calls[0].kwargs["softmax_scale"] == 0.125
"""

from __future__ import annotations

import importlib.machinery
import types
from dataclasses import dataclass, field
from typing import Any

import torch

DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class Call:
    """One recorded call: the function's name, its tensor arguments' shapes and dtypes, and every
    other argument as passed."""

    function: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class FakeFlashAttn:
    """A recording fake; ``returns_lse`` mimics FlashAttention-3 releases that returned ``(out, lse)``."""

    def __init__(self, *, returns_lse: bool = False, version: str = "2.8.4") -> None:
        self.calls: list[Call] = []
        self.returns_lse = returns_lse
        self.version = version

    def module(self, name: str = "flash_attn") -> types.ModuleType:
        """A module object exposing the two functions (put it in ``sys.modules``)."""
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() finds it in sys.modules
        mod.flash_attn_func = self.flash_attn_func
        mod.flash_attn_varlen_func = self.flash_attn_varlen_func
        mod.__version__ = self.version
        return mod

    # -- the interface ------------------------------------------------------------------------------
    def flash_attn_func(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        dropout_p: float = 0.0,
        softmax_scale: float | None = None,
        causal: bool = False,
        window_size: tuple[int, int] = (-1, -1),
        **rest: Any,
    ) -> Any:
        self._check(q, k, v, batch_dims=1)
        self.calls.append(
            Call(
                "flash_attn_func",
                (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
                (q.dtype, k.dtype, v.dtype),
                {
                    "dropout_p": dropout_p,
                    "softmax_scale": softmax_scale,
                    "causal": causal,
                    "window_size": window_size,
                    **rest,
                },
            )
        )
        scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
        out = torch.stack([_attend(q[b], k[b], v[b], scale, causal, window_size) for b in range(q.shape[0])])
        return (out, None) if self.returns_lse else out

    def flash_attn_varlen_func(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        dropout_p: float = 0.0,
        softmax_scale: float | None = None,
        causal: bool = False,
        window_size: tuple[int, int] = (-1, -1),
        **rest: Any,
    ) -> Any:
        self._check(q, k, v, batch_dims=0)
        for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
            if cu.dtype != torch.int32:
                raise RuntimeError(f"{name} must have dtype int32")
        if not isinstance(max_seqlen_q, int) or not isinstance(max_seqlen_k, int):
            raise TypeError("max_seqlen_q and max_seqlen_k must be int")
        self.calls.append(
            Call(
                "flash_attn_varlen_func",
                (tuple(q.shape), tuple(k.shape), tuple(v.shape)),
                (q.dtype, k.dtype, v.dtype),
                {
                    "cu_seqlens_q": cu_seqlens_q.tolist(),
                    "cu_seqlens_k": cu_seqlens_k.tolist(),
                    "max_seqlen_q": max_seqlen_q,
                    "max_seqlen_k": max_seqlen_k,
                    "dropout_p": dropout_p,
                    "softmax_scale": softmax_scale,
                    "causal": causal,
                    "window_size": window_size,
                    **rest,
                },
            )
        )
        scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
        out = torch.full_like(q, float("nan"))  # the kernel leaves rows past the last sequence unwritten
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        for i in range(len(cq) - 1):
            out[cq[i] : cq[i + 1]] = _attend(
                q[cq[i] : cq[i + 1]], k[ck[i] : ck[i + 1]], v[ck[i] : ck[i + 1]], scale, causal, window_size
            )
        return (out, None) if self.returns_lse else out

    @staticmethod
    def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, batch_dims: int) -> None:
        if q.dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
            raise RuntimeError("FlashAttention only support fp16 and bf16 data type")
        if q.dim() != 3 + batch_dims or k.dim() != 3 + batch_dims or k.shape != v.shape:
            raise RuntimeError(f"bad shapes q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}")
        if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
            raise RuntimeError("Input tensor must have contiguous last dimension")
        if q.shape[-1] > 256:
            raise RuntimeError("FlashAttention forward only supports head dimension at most 256")
        if q.shape[-2] % k.shape[-2]:
            raise RuntimeError("Number of heads in key/value must divide number of heads in query")


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool, window: tuple[int, int]
) -> torch.Tensor:
    """One sequence: ``q (Sq, H, D)``, ``k``/``v`` ``(Sk, Hkv, D)`` to ``(Sq, H, D)``, in float64."""
    sq, heads, _ = q.shape
    sk, kv_heads, _ = k.shape
    group = heads // kv_heads
    kk = k.double().repeat_interleave(group, dim=1)
    vv = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), kk) * scale
    left, right = window
    if causal:
        right = 0
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    allowed = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key is all -inf: zeros
    return torch.einsum("hqk,khd->qhd", probs, vv).to(q.dtype)
