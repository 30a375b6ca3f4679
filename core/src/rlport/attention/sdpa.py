"""The reference attention backend: ``torch.nn.functional.scaled_dot_product_attention``.

It runs on any torch device and is what the core answers ``rlport_attention_backend`` with when no
plugin does. Semantics every backend must share (the conformance suite checks them against this one):

- ``q (B, H, Lq, D)``, ``k``/``v`` ``(B, Hkv, Lk, D)``; grouped/multi-query attention when ``Hkv < H``
  (``H % Hkv == 0``; query head ``h`` uses kv head ``h // (H // Hkv)``).
- ``causal`` with ``Lq != Lk`` is bottom-right aligned: query ``i`` attends keys ``j <= i + Lk - Lq``
  (so a single decode query sees the whole cache). torch's ``is_causal=True`` is top-left aligned, so it
  is used only when ``Lq == Lk``; otherwise the mask is built (:mod:`rlport.attention.masks`).
- ``mask`` is boolean (``True`` = attend) or additive in the query dtype, broadcastable to
  ``(B, H, Lq, Lk)``; it is combined with ``causal`` and the window. A query row that may attend no key
  returns zeros.
- ``scale`` defaults to ``1 / sqrt(D)``.
- ``forward_varlen`` attends within each packed sequence only; rows past ``cu_seqlens_q[-1]`` are zero.

GQA uses torch's ``enable_gqa=True``, which on CPU is exact and faster than repeating kv heads
(measured with torch 2.13: decode B=1,H=8,Hkv=2,Lk=128 fp32 15 µs vs 35 µs; prefill B=4,H=16,Hkv=4,
L=512 fp32 36 ms vs 41 ms).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

from rlport.attention import masks
from rlport.attention.checks import check_dense_fast, check_varlen
from rlport.types import AttentionSpec

_sdpa = F.scaled_dot_product_attention
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16", "float64")


class SdpaBackend:
    """Attention through torch's scaled-dot-product attention; ``window`` is a sliding window in tokens
    (``None``: full attention). Stateless apart from the window, so one instance serves every layer."""

    name = "sdpa"

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of tokens or None, got {window}")
        self.window = window

    def __repr__(self) -> str:
        return f"SdpaBackend(window={self.window})"

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool,
        scale: float | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention over ``(B, H, Lq, D)`` queries; returns ``(B, H, Lq, D)``."""
        check_dense_fast(q, k, v, mask)
        return self._attend(q, k, v, causal, scale, mask)

    def forward_varlen(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        causal: bool,
        scale: float | None = None,
    ) -> torch.Tensor:
        """Attention over packed ``(total_q, H, D)`` queries, sequence by sequence; returns
        ``(total_q, H, D)``. Each sequence is one dense call on views, so nothing crosses a boundary."""
        starts_q, starts_k = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        out = q.new_zeros(q.shape)
        for i in range(len(starts_q) - 1):
            qs, qe, ks, ke = starts_q[i], starts_q[i + 1], starts_k[i], starts_k[i + 1]
            if qe == qs or ke == ks:
                continue  # no queries, or no keys to attend: the rows stay zero
            o = self._attend(
                q[qs:qe].transpose(0, 1)[None],
                k[ks:ke].transpose(0, 1)[None],
                v[ks:ke].transpose(0, 1)[None],
                causal,
                scale,
                None,
            )
            out[qs:qe] = o[0].transpose(0, 1)
        return out

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        causal: bool,
        scale: float | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The attention of checked dense inputs (``forward``, and each sequence of ``forward_varlen``)."""
        gqa = k.shape[1] != q.shape[1]
        lq, lk = q.shape[2], k.shape[2]
        if self.window is None:
            if not causal or lq == 1:
                # A single query at the last position sees every key: causal is a no-op.
                return _sdpa(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
            if mask is None and lq == lk:
                return _sdpa(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        return self._masked(q, k, v, causal, scale, mask, gqa)

    def _masked(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        causal: bool,
        scale: float | None,
        mask: torch.Tensor | None,
        gqa: bool,
    ) -> torch.Tensor:
        """Attention with the causal/window pattern built as a mask (bottom-right aligned)."""
        pattern = masks.structural_mask(
            q.shape[2], k.shape[2], causal=causal, window=self.window, device=q.device
        )
        return _sdpa(q, k, v, attn_mask=masks.combine(mask, pattern), scale=scale, enable_gqa=gqa)


def backend_for(spec: AttentionSpec) -> SdpaBackend | None:
    """A reference backend for calls shaped like ``spec``, or ``None`` when it cannot serve them
    (attention dropout, which the backend protocol has no argument for; a dtype that is not floating;
    heads not a multiple of kv heads; a non-positive window).

    Each call returns a new instance (the runtime keeps one per spec), so a caller that changes its
    backend's attributes changes nobody else's."""
    if spec.dropout or spec.dtype not in SUPPORTED_DTYPES:
        return None
    if spec.head_dim < 1 or spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
        return None
    if spec.window is not None and spec.window < 1:
        return None
    return SdpaBackend(window=spec.window)


class SdpaKernelBackend(SdpaBackend):
    """:class:`SdpaBackend` restricted to named torch SDPA kernels (``torch.nn.attention.SDPBackend``
    member names such as ``"FLASH_ATTENTION"``, ``"EFFICIENT_ATTENTION"``, ``"CUDNN_ATTENTION"``,
    ``"MATH"``), so a device plugin decides which fused kernels may run instead of torch's default
    order. Each call runs under ``sdpa_kernel(kernels)``; torch picks the first listed kernel that
    accepts the call and raises when none does, so a plugin lists ``"MATH"`` last where it wants
    every call served."""

    def __init__(self, kernels: tuple[str, ...], window: int | None = None) -> None:
        from torch.nn.attention import SDPBackend

        super().__init__(window=window)
        known = [name for name in SDPBackend.__members__ if name not in ("ERROR", "OVERRIDEABLE")]
        if not kernels or any(k not in known for k in kernels):
            raise ValueError(f"SDPA kernels {list(kernels)} must be a non-empty list of {', '.join(known)}")
        self.kernels = tuple(kernels)
        self._backends = [SDPBackend.__members__[k] for k in kernels]
        self.name = "sdpa[" + "+".join(k.lower() for k in kernels) + "]"

    def __repr__(self) -> str:
        return f"SdpaKernelBackend(kernels={self.kernels}, window={self.window})"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        with sdpa_kernel(self._backends):
            return super().forward(q, k, v, **kwargs)

    def forward_varlen(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        with sdpa_kernel(self._backends):
            return super().forward_varlen(q, k, v, **kwargs)
