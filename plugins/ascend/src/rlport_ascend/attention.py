"""Attention through ``torch_npu.npu_fusion_attention``, with rlport's semantics.

The kernel's contract (torch_npu documentation "torch_npu.npu_fusion_attention"; transformers'
``integrations/npu_flash_attention.py`` calls it the same way):

- ``npu_fusion_attention(q, k, v, head_num, input_layout, *, pse, padding_mask, atten_mask, scale=1.,
  keep_prob=1., pre_tockens, next_tockens, inner_precise, prefix, actual_seq_qlen, actual_seq_kvlen,
  sparse_mode=0, ...)`` returns a tuple whose ``[0]`` is the attention output;
- ``scale`` defaults to **1**, so this backend always passes ``1/sqrt(head_dim)`` or the caller's scale;
- ``atten_mask`` is boolean with **True = masked** (rlport's boolean masks say True = attend);
- ``sparse_mode`` 3 is bottom-right ("rightDownCausal") causal, 4 is a band of ``pre_tockens`` keys before
  and ``next_tockens`` after each query's diagonal; both take the compressed ``triu(ones(2048, 2048), 1)``
  boolean mask; the docstring shipped in torch_npu 2.13.0 (``torch_npu/_op_plugin_docs.py``) is the
  source of these facts, and of the limits: float16/bfloat16/float32, head dim 1..768, at most 256
  query heads;
- layouts: ``BNSD`` for padded batches (rlport's ``(B, H, L, D)`` as is), ``TND`` for packed
  variable-length input, where ``actual_seq_qlen``/``actual_seq_kvlen`` are the *cumulative* lengths
  without the leading 0 (``cu_seqlens[1:]``);
- grouped-query attention: ``head_num`` is the number of query heads; k/v carry fewer heads.

Where the kernel cannot give exactly what rlport's reference gives, this backend does not guess:

- a query row that may attend no key is zero in rlport; the kernel's value there is unspecified, so
  with an explicit mask those rows are zeroed, and ``Lq > Lk`` causal attention (leading rows see no
  key) is built as an explicit mask;
- a sliding window with ``Lq != Lk`` goes through an explicit mask (mode 0): the docstring puts the band
  mode's origin at the bottom-right corner, but Huawei's golden reference for the op (msprobe's
  ``bench_functions/npu_fusion_attention.py``) builds it from the top-left, and the two agree only for
  ``Lq == Lk``, which is when the band mode is used;
- an additive mask is only exact as a boolean one when every value is 0 or the dtype's lowest (what
  transformers builds); any other additive mask, and packed input whose sequences have more queries than
  keys (or queries and no keys), are computed by the core's reference backend on the same device
  (``fallbacks`` counts them);
- packed input with a sliding window is refused at resolution (:func:`backend_for` returns ``None``):
  the per-sequence band semantics of the varlen modes are not documented well enough to be exact.

Tested against a fake ``torch_npu`` whose ``npu_fusion_attention`` computes the documented math and
records its arguments; never run on an Ascend NPU.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rlport.attention import masks
from rlport.attention.checks import check_dense_fast, check_varlen
from rlport.attention.sdpa import SdpaBackend
from rlport.types import AttentionSpec

DTYPES = ("float16", "bfloat16", "float32")
MAX_HEAD_DIM = 768
MAX_HEADS = 256
CAUSAL_BOTTOM_RIGHT = 3
BAND = 4
COMPRESSED = 2048


class FusionAttention:
    """:class:`rlport.types.AttentionBackend` over ``npu_fusion_attention`` (``op``), for a sliding
    ``window`` in tokens or ``None``. One instance serves every layer of one spec."""

    name = "npu_fusion_attention"

    def __init__(self, op: Any, window: int | None = None) -> None:
        self.op = op
        self.window = window
        self.reference = SdpaBackend(window)
        self.fallbacks = 0
        self._compressed: dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"FusionAttention(window={self.window})"

    # -- dense (BNSD) ----------------------------------------------------------------------------------
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
        check_dense_fast(q, k, v, mask)
        lq, lk = q.shape[2], k.shape[2]
        scale = _scale(q, scale)
        if mask is None and lq == 1 and self.window is None:
            causal = False  # one query at the last position sees every key
        if mask is None and self.window is None and not causal:
            return self._call(q, k, v, "BNSD", scale)
        if mask is None and self.window is None and lq <= lk:
            return self._call(
                q, k, v, "BNSD", scale, atten_mask=self._triu(q), sparse_mode=CAUSAL_BOTTOM_RIGHT
            )
        if mask is None and self.window is not None and lq == lk:
            after = 0 if causal else self.window - 1
            return self._call(
                q,
                k,
                v,
                "BNSD",
                scale,
                atten_mask=self._triu(q),
                sparse_mode=BAND,
                pre_tockens=self.window - 1,
                next_tockens=after,
            )
        allowed = self._allowed(q, mask, causal, lq, lk)
        if allowed is None:
            self.fallbacks += 1
            return self.reference.forward(q, k, v, causal=causal, scale=scale, mask=mask)
        out = self._call(q, k, v, "BNSD", scale, atten_mask=~allowed)
        return out * allowed.any(-1, keepdim=True).to(out.dtype)

    def _allowed(
        self, q: torch.Tensor, mask: torch.Tensor | None, causal: bool, lq: int, lk: int
    ) -> torch.Tensor | None:
        """The ``(B, 1|H, Lq, Lk)`` boolean "may attend" mask, or ``None`` when ``mask`` is additive with
        values a boolean mask cannot express."""
        attend = masks.structural_mask(lq, lk, causal=causal, window=self.window, device=q.device)
        if mask is not None:
            if mask.dtype != torch.bool:
                lowest = torch.finfo(mask.dtype).min
                blocked = mask <= lowest
                if not bool(((mask == 0) | blocked).all()):
                    return None
                mask = ~blocked
            attend = mask & attend
        while attend.dim() < 4:
            attend = attend[None]
        heads = attend.shape[1]
        return attend.expand(q.shape[0], heads, lq, lk).contiguous()

    # -- packed (TND) ----------------------------------------------------------------------------------
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
        starts_q, starts_k = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        lengths = [
            (starts_q[i + 1] - starts_q[i], starts_k[i + 1] - starts_k[i]) for i in range(len(starts_q) - 1)
        ]
        # Rows that may attend no key (a sequence with queries but no keys, or more queries than keys
        # under causality) are zero in rlport and unspecified in the kernel; empty sequences are fine.
        if self.window is not None or any(nq and (nk == 0 or (causal and nq > nk)) for nq, nk in lengths):
            self.fallbacks += 1
            return self.reference.forward_varlen(
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
        tq, tk = starts_q[-1], starts_k[-1]
        extra: dict[str, Any] = {"actual_seq_qlen": starts_q[1:], "actual_seq_kvlen": starts_k[1:]}
        if causal:
            extra.update(atten_mask=self._triu(q), sparse_mode=CAUSAL_BOTTOM_RIGHT)
        out = self._call(q[:tq], k[:tk], v[:tk], "TND", _scale(q, scale), **extra)
        if tq == q.shape[0]:
            return out
        padded = q.new_zeros(q.shape)  # rows past cu_seqlens_q[-1] are zero, as in the reference
        padded[:tq] = out
        return padded

    # -- the kernel ------------------------------------------------------------------------------------
    def _call(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, scale: float, **kwargs: Any
    ) -> torch.Tensor:
        # head_num is the query heads: dim 1 of both BNSD (B, N, S, D) and TND (T, N, D)
        return self.op(q, k, v, q.shape[1], layout, scale=scale, keep_prob=1.0, **kwargs)[0]

    def _triu(self, q: torch.Tensor) -> torch.Tensor:
        """The compressed causal mask the sparse modes take, one per device."""
        mask = self._compressed.get(q.device)
        if mask is None:
            ones = torch.ones(COMPRESSED, COMPRESSED, dtype=torch.bool, device=q.device)
            mask = self._compressed[q.device] = torch.triu(ones, diagonal=1)
        return mask


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def backend_for(spec: AttentionSpec, op: Any) -> FusionAttention | None:
    """A fusion-attention backend for ``spec``, or ``None`` to defer to the next plugin or the core's
    reference: a device other than ``npu``, a dtype the kernel does not take (float16, bfloat16 and
    float32), attention dropout, a head dim outside 1..768 or more than 256 query heads (the documented
    limits), heads not a multiple of kv heads, and packed input with a sliding window (see the module's
    notes)."""
    if spec.device_type != "npu" or spec.dtype not in DTYPES or spec.dropout:
        return None
    if not 1 <= spec.head_dim <= MAX_HEAD_DIM or not 1 <= spec.num_heads <= MAX_HEADS:
        return None
    if spec.num_kv_heads < 1 or spec.num_heads % spec.num_kv_heads:
        return None
    if spec.window is not None and (spec.window < 1 or spec.varlen):
        return None
    return FusionAttention(op, spec.window)
