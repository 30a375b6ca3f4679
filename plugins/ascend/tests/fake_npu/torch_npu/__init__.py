"""A fake ``torch_npu`` for tests on a machine without Ascend hardware.

Its ops compute the math the torch_npu documentation gives for them, in float32 on whatever device the
tensors are on, and record every call's arguments in :data:`CALLS` so tests can check exactly what the
plugin passed. Importing it installs a fake ``torch.npu`` (:mod:`torch_npu.npu`), as the real package
does. It is a plain folder put on ``sys.path``: no distribution metadata, so no ``torch.backends``
entry point, and ``import torch`` never imports it.

Where the documentation leaves a value unspecified (a query row that may attend no key), the fake
returns what Huawei's own golden reference returns (a finite fill, so the mean of the values) rather
than rlport's zeros: a plugin that relied on the kernel for those rows would be caught.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from torch_npu import npu

__version__ = "2.13.0+fake"
CALLS: list[dict] = []
COMPRESSED = 2048
_FILL = -1e30

# what `import torch_npu` does for real, through torch._register_device_module("npu", torch_npu.npu)
torch.npu = npu
sys.modules["torch.npu"] = npu


def _record(op: str, **kwargs) -> None:
    CALLS.append({"op": op, **kwargs})


def calls(op: str) -> list[dict]:
    return [c for c in CALLS if c["op"] == op]


def _is_compressed(mask) -> bool:
    if mask is None or tuple(mask.shape) != (COMPRESSED, COMPRESSED) or mask.dtype != torch.bool:
        return False
    expected = torch.triu(torch.ones(COMPRESSED, COMPRESSED, dtype=torch.bool, device=mask.device), 1)
    return bool(torch.equal(mask, expected))


def _masked(mode, mask, s1, s2, pre, nxt, device):
    """The documented ``(s1, s2)`` (or broadcastable) boolean "masked" pattern of a sparse mode."""
    rows = torch.arange(s1, device=device)[:, None]
    cols = torch.arange(s2, device=device)[None, :]
    if mode in (2, 3, 4):
        if not _is_compressed(mask):
            raise ValueError(
                f"sparse_mode {mode} needs the compressed triu(ones(2048, 2048), 1) bool atten_mask"
            )
        if mode == 2:
            return cols > rows
        if mode == 3:
            return cols > rows + (s2 - s1)
        return (cols > rows + nxt) | (cols < rows - pre)
    if mode != 0:
        raise NotImplementedError(f"fake npu_fusion_attention: sparse_mode {mode}")
    band = (cols > rows + nxt) | (cols < rows - pre)
    if mask is None:
        return band
    if mask.dtype != torch.bool:
        raise TypeError(f"atten_mask must be bool (True = masked), got {mask.dtype}")
    return mask | band


def _attend(q, k, v, masked, scale):
    """``(B, N, S1, D)`` x ``(B, N2, S2, D)``; grouped kv heads are shared by consecutive query heads."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1).float()
    v = v.repeat_interleave(group, dim=1).float()
    scores = (q.float() @ k.transpose(-1, -2)) * scale
    if masked is not None:
        scores = scores.masked_fill(masked, _FILL)
    return (scores.softmax(-1) @ v).to(q.dtype)


def npu_fusion_attention(
    query,
    key,
    value,
    head_num,
    input_layout,
    pse=None,
    padding_mask=None,
    atten_mask=None,
    scale=1.0,
    keep_prob=1.0,
    pre_tockens=2147483647,
    next_tockens=2147483647,
    inner_precise=0,
    prefix=None,
    actual_seq_qlen=None,
    actual_seq_kvlen=None,
    sparse_mode=0,
    gen_mask_parallel=True,
    sync=False,
):
    _record(
        "npu_fusion_attention",
        layout=input_layout,
        head_num=head_num,
        scale=scale,
        keep_prob=keep_prob,
        sparse_mode=sparse_mode,
        pre_tockens=pre_tockens,
        next_tockens=next_tockens,
        atten_mask_shape=None if atten_mask is None else tuple(atten_mask.shape),
        actual_seq_qlen=None if actual_seq_qlen is None else list(actual_seq_qlen),
        actual_seq_kvlen=None if actual_seq_kvlen is None else list(actual_seq_kvlen),
        q_shape=tuple(query.shape),
        k_shape=tuple(key.shape),
    )
    if pse is not None or padding_mask is not None or prefix is not None or keep_prob != 1.0:
        raise NotImplementedError("fake npu_fusion_attention: pse, padding_mask, prefix and dropout")
    if query.dtype not in (torch.float16, torch.bfloat16, torch.float32) or not (
        query.dtype == key.dtype == value.dtype
    ):
        raise TypeError(f"npu_fusion_attention takes one of float16/bfloat16/float32, got {query.dtype}")
    if input_layout == "BNSD":
        if head_num != query.shape[1]:
            raise ValueError(f"head_num {head_num} != query heads {query.shape[1]}")
        s1, s2 = query.shape[2], key.shape[2]
        masked = _masked(sparse_mode, atten_mask, s1, s2, pre_tockens, next_tockens, query.device)
        out = _attend(query, key, value, masked, scale)
    elif input_layout == "TND":
        if head_num != query.shape[1]:
            raise ValueError(f"head_num {head_num} != query heads {query.shape[1]}")
        qlen, kvlen = list(actual_seq_qlen), list(actual_seq_kvlen)
        if len(qlen) != len(kvlen) or qlen[-1] != query.shape[0] or kvlen[-1] != key.shape[0]:
            raise ValueError(
                f"actual_seq_qlen/kvlen {qlen}/{kvlen} must be cumulative, without the leading 0, "
                f"ending at T={query.shape[0]}/{key.shape[0]}"
            )
        if sparse_mode == 0 and atten_mask is not None:
            raise NotImplementedError("fake npu_fusion_attention: TND with an explicit mask")
        out = torch.empty_like(query)
        q0 = k0 = 0
        for q1, k1 in zip(qlen, kvlen, strict=True):
            if q1 < q0 or k1 < k0:  # lengths, not cumulative sums: [3, 2] instead of [3, 5]
                raise ValueError(
                    f"actual_seq_qlen/kvlen must be cumulative (never decreasing), got {qlen} / {kvlen}"
                )
            if q1 == q0:  # an empty sequence is allowed (documented: [2, 4, 4, 6, 8])
                k0 = k1
                continue
            qs, ks, vs = (t.transpose(0, 1)[None] for t in (query[q0:q1], key[k0:k1], value[k0:k1]))
            masked = _masked(
                sparse_mode, atten_mask, q1 - q0, k1 - k0, pre_tockens, next_tockens, query.device
            )
            out[q0:q1] = _attend(qs, ks, vs, masked, scale)[0].transpose(0, 1)
            q0, k0 = q1, k1
    else:
        raise NotImplementedError(f"fake npu_fusion_attention: layout {input_layout}")
    empty = torch.empty(0)
    return out, empty, empty, empty, 0, 0, 0


def npu_rms_norm(x, gamma, epsilon=1e-6):
    """``x * rsqrt(mean(x^2) + epsilon) * gamma`` in float32, returned in ``x``'s dtype, with rstd."""
    _record("npu_rms_norm", shape=tuple(x.shape), epsilon=epsilon, dtype=x.dtype)
    if gamma.dtype != x.dtype:
        raise TypeError(f"npu_rms_norm: gamma dtype {gamma.dtype} must be the input's {x.dtype}")
    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + epsilon)
    return (xf * rstd * gamma.float()).to(x.dtype), rstd


def npu_swiglu(x, dim=-1):
    """Split ``x`` in two along ``dim``: ``silu(first) * second``."""
    _record("npu_swiglu", shape=tuple(x.shape), dim=dim)
    a, b = x.float().chunk(2, dim=dim)
    return (F.silu(a) * b).to(x.dtype)


def npu_rotary_mul(x, r1, r2, rotary_mode="half", rotate=None):
    """``x * r1 + rotate_half(x) * r2`` (the "half" rotary mode), with r1/r2 broadcast over ``x``."""
    _record("npu_rotary_mul", shape=tuple(x.shape), r_shape=tuple(r1.shape))
    if x.dim() != 4 or r1.dim() != 4 or r2.dim() != 4:
        raise ValueError(
            f"npu_rotary_mul takes 4-D input, r1, r2; got {x.dim()}-D, {r1.dim()}-D, {r2.dim()}-D"
        )
    if rotary_mode != "half" or rotate is not None:
        raise NotImplementedError("fake npu_rotary_mul: only the 'half' mode")
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * r1.float() + torch.cat((-x2, x1), dim=-1) * r2.float()).to(x.dtype)
