"""rlport's attention contract on the flash-attn interface (``flash_attn_func`` /
``flash_attn_varlen_func``), for any library that implements it: FlashAttention-2 (module
``flash_attn``), FlashAttention-3 (module ``flash_attn_interface``), and the ROCm builds of
FlashAttention-2 (composable-kernel or Triton). A device plugin decides which module serves which
spec (:func:`serves` checks what the interface itself cannot take); the translation lives here once.

The translation, exact for every call it accepts:

- layout: rlport's dense ``(B, H, L, D)`` is the interface's ``(B, L, H, D)`` by a transpose (a view;
  the last dimension stays contiguous, which is all the kernels need), and back;
- ``softmax_scale`` is always passed explicitly (``1/sqrt(D)`` when the caller gives none), never left to
  the library's default;
- causal: both are bottom-right aligned when ``q_len != k_len`` (query ``i`` at key position
  ``i + k_len - q_len``), and both return zeros for a query row that sees no key, so ``causal`` passes
  through unchanged;
- sliding window of ``w`` tokens: rlport's causal window (keys ``p - w < j <= p``) is
  ``window_size=(w - 1, 0)``; its symmetric window (``|j - p| < w``) is ``(w - 1, w - 1)``; no window
  is ``(-1, -1)``;
- grouped-query attention: both map query head ``h`` to kv head ``h // (H // Hkv)``, so k/v go in with
  their own head count;
- ``cu_seqlens`` go in as int32 (int64 input is converted on the device), ``max_seqlen`` as ints; rows
  past ``cu_seqlens_q[-1]`` are zeroed after the call (the kernels leave them unwritten), with no
  host synchronisation;
- masks: the interface takes none. A call with a boolean or additive ``mask`` (or of a dtype the kernel
  does not take) is served by the backend's ``fallback`` (SDPA with the same window), exactly.

The functions may return ``out`` or, in FlashAttention-3 releases before December 2024, ``(out, lse)``;
both are accepted.
"""

from __future__ import annotations

from typing import Any

import torch

from rlport.attention.checks import check_dense_fast, check_packed
from rlport.errors import UnsupportedAttention
from rlport.types import AttentionBackend, AttentionSpec

#: What the flash-attn interface takes (FA2 README: fp16/bf16, head dims up to 256).
FLASH_DTYPES = ("float16", "bfloat16")
MAX_HEAD_DIM = 256
_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def serves(
    spec: AttentionSpec,
    *,
    dtypes: tuple[str, ...] = FLASH_DTYPES,
    max_head_dim: int = MAX_HEAD_DIM,
    window: bool = True,
) -> bool:
    """Whether a flash-attn library with these limits can serve calls shaped like ``spec``: no
    attention dropout (the backend protocol has no argument for it), a dtype in ``dtypes``, a head dim
    up to ``max_head_dim``, query heads a multiple of kv heads, and a sliding window only where the
    library has one (``window``)."""
    if spec.dropout or spec.dtype not in dtypes or not 1 <= spec.head_dim <= max_head_dim:
        return False
    if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
        return False
    return spec.window is None or (window and spec.window >= 1)


def window_size(causal: bool, window: int | None) -> tuple[int, int]:
    """The interface's ``window_size=(left, right)`` for rlport's window of ``window`` tokens."""
    if window is None:
        return (-1, -1)
    return (window - 1, 0) if causal else (window - 1, window - 1)


class FlashAttnBackend:
    """An :class:`~rlport.types.AttentionBackend` calling ``functions.flash_attn_func`` and
    ``functions.flash_attn_varlen_func`` (``functions`` is the library module, or anything with
    those two attributes). ``fallback`` serves the calls the interface cannot take (a mask, a dtype
    outside ``dtypes``); give it the same window."""

    def __init__(
        self,
        functions: Any,
        *,
        name: str,
        fallback: AttentionBackend,
        window: int | None = None,
        dtypes: tuple[str, ...] = FLASH_DTYPES,
    ) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of tokens or None, got {window}")
        self.name = name
        self.window = window
        self.fallback = fallback
        self._func = functions.flash_attn_func
        self._varlen = functions.flash_attn_varlen_func
        self._dtypes = frozenset(_TORCH_DTYPES[d] for d in dtypes)
        self._window = {True: window_size(True, window), False: window_size(False, window)}

    def __repr__(self) -> str:
        return f"FlashAttnBackend(name={self.name!r}, window={self.window}, fallback={self.fallback!r})"

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
        if mask is not None or getattr(q, "dtype", None) not in self._dtypes:
            return self.fallback.forward(q, k, v, causal=causal, scale=scale, mask=mask)
        check_dense_fast(q, k, v, None)
        d = q.shape[3]
        out = self._func(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            softmax_scale=d**-0.5 if scale is None else float(scale),
            causal=bool(causal),
            window_size=self._window[bool(causal)],
        )
        if isinstance(out, tuple):
            out = out[0]
        return out.transpose(1, 2)

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
        """Attention over packed ``(total_q, H, D)`` queries; returns ``(total_q, H, D)``."""
        check_packed(q, k, v)
        if q.dtype not in self._dtypes:
            return self.fallback.forward_varlen(
                q,
                k,
                v,
                cu_seqlens_q=cu_seqlens_q,
                cu_seqlens_k=cu_seqlens_k,
                max_seqlen_q=max_seqlen_q,
                max_seqlen_k=max_seqlen_k,
                causal=causal,
                scale=scale,
            )
        cu_q = _int32(cu_seqlens_q, "cu_seqlens_q", q.device)
        cu_k = _int32(cu_seqlens_k, "cu_seqlens_k", q.device)
        if cu_q.numel() != cu_k.numel():
            raise UnsupportedAttention(
                f"cu_seqlens_q describes {cu_q.numel() - 1} sequences but cu_seqlens_k {cu_k.numel() - 1}",
                fix="pass one cu_seqlens entry per sequence for both queries and keys",
            )
        out = self._varlen(
            q,
            k,
            v,
            cu_q,
            cu_k,
            int(max_seqlen_q),
            int(max_seqlen_k),
            softmax_scale=q.shape[2] ** -0.5 if scale is None else float(scale),
            causal=bool(causal),
            window_size=self._window[bool(causal)],
        )
        if isinstance(out, tuple):
            out = out[0]
        # Rows past the last sequence are not written by the kernels; the contract says zero.
        tail = torch.arange(q.shape[0], device=q.device) >= cu_q[-1]
        return out.masked_fill_(tail[:, None, None], 0)


def _int32(cu: Any, name: str, device: torch.device) -> torch.Tensor:
    """``cu`` as an int32 tensor on ``device`` (the interface takes only int32)."""
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.numel() < 2 or cu.is_floating_point():
        desc = f"{cu.dtype} of shape {tuple(cu.shape)}" if isinstance(cu, torch.Tensor) else type(cu).__name__
        raise UnsupportedAttention(
            f"{name} must be a 1-D int32/int64 tensor [0, len_0, len_0+len_1, ...] with at least 2 entries, "
            f"got {desc}",
            fix=f"build it with torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32) as {name}",
        )
    if cu.dtype is torch.int32 and cu.device == device:
        return cu
    return cu.to(device=device, dtype=torch.int32)
