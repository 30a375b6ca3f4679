"""The reference attention backend against plain softmax(QK^T * scale + mask)V computed in float64."""

from __future__ import annotations

import math

import pytest
import torch

from rlport.attention.sdpa import SdpaBackend, backend_for
from rlport.errors import UnsupportedAttention
from rlport.types import AttentionBackend, AttentionSpec

LOW_PRECISION = [torch.bfloat16, torch.float16]


def reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    scale: float | None = None,
    mask: torch.Tensor | None = None,
    window: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Attention written out: kv heads repeated, scores, -inf where forbidden, softmax, zero rows that see
    nothing. Computed in ``dtype`` (float64 for the reference, the input dtype for "plain torch math")."""
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    heads, kv_heads, lq, lk = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    k = k.repeat_interleave(heads // kv_heads, dim=1)
    v = v.repeat_interleave(heads // kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    i = torch.arange(lq)[:, None]
    j = torch.arange(lk)[None, :]
    # distance of key j behind query i, with query i placed at key position i + lk - lq
    behind = (i + (lk - lq)) - j
    allowed = torch.ones(lq, lk, dtype=torch.bool)
    if causal:
        allowed &= behind >= 0
        if window is not None:
            allowed &= behind < window
    elif window is not None:
        allowed &= behind.abs() < window
    if mask is not None and mask.dtype == torch.bool:
        allowed = allowed & mask
    elif mask is not None:
        scores = scores + mask.to(dtype)
    scores = scores.masked_fill(~allowed, float("-inf"))
    sees_something = torch.isfinite(scores).any(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(~sees_something, 0.0), dim=-1) * sees_something
    return probs @ v


def make(
    b: int, h: int, hkv: int, lq: int, lk: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0
):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    return q, k, v


def assert_close_fp32(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)


def assert_flash_rule(out: torch.Tensor, plain: torch.Tensor, ref: torch.Tensor, floor: float = 1e-4) -> None:
    """flash-attn's rule: error vs fp64 at most twice the error of plain math in the same dtype, plus a floor."""
    err = (out.double() - ref).abs().max().item()
    plain_err = (plain.double() - ref).abs().max().item()
    assert err <= 2 * plain_err + floor, f"error {err:.3e} vs plain-math error {plain_err:.3e}"


# (batch, heads, kv_heads, q_len, k_len, head_dim)
SHAPES = [
    pytest.param((2, 4, 4, 7, 7, 64), id="mha-square"),
    pytest.param((2, 8, 2, 13, 13, 40), id="gqa-odd-len-hd40"),
    pytest.param((1, 8, 1, 1, 33, 72), id="mqa-decode-hd72"),
    pytest.param((3, 6, 2, 1, 1, 16), id="gqa-single-token"),
    pytest.param((2, 4, 2, 5, 17, 72), id="gqa-chunk-lq<lk"),
    pytest.param((1, 4, 2, 9, 4, 40), id="gqa-lq>lk"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_forward_fp32_matches_reference(shape: tuple[int, ...], causal: bool) -> None:
    q, k, v = make(*shape)
    out = SdpaBackend().forward(q, k, v, causal=causal)
    assert out.dtype == torch.float32
    assert_close_fp32(out, reference(q, k, v, causal=causal))


def test_causal_is_bottom_right_aligned() -> None:
    # One query over 5 keys must see all 5 (top-left alignment would let it see only key 0).
    q, k, v = make(1, 2, 2, 1, 5, 8)
    out = SdpaBackend().forward(q, k, v, causal=True)
    assert_close_fp32(out, reference(q, k, v, causal=False))
    assert (out.double() - reference(q, k[:, :, :1], v[:, :, :1], causal=False)).abs().max() > 1e-2
    # With more queries than keys the first lq - lk queries see nothing and return zeros.
    q, k, v = make(1, 2, 2, 6, 4, 8)
    out = SdpaBackend().forward(q, k, v, causal=True)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2]))
    assert out[:, :, 2:].abs().sum() > 0


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("shape", [(2, 8, 2, 11, 11, 40), (2, 4, 1, 3, 19, 72)], ids=["square", "chunk"])
def test_forward_with_mask(causal: bool, kind: str, shape: tuple[int, ...]) -> None:
    b, _, _, lq, lk, _ = shape
    q, k, v = make(*shape)
    g = torch.Generator().manual_seed(1)
    allowed = torch.rand(b, 1, lq, lk, generator=g) > 0.3
    allowed[..., -1] = True  # every query sees at least its own key position in the causal case
    if kind == "bool":
        mask = allowed
    else:
        mask = torch.where(allowed, torch.randn(b, 1, lq, lk, generator=g), torch.tensor(float("-inf")))
    out = SdpaBackend().forward(q, k, v, causal=causal, mask=mask)
    assert_close_fp32(out, reference(q, k, v, causal=causal, mask=mask))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("shape", [(2, 4, 2, 12, 12, 40), (1, 4, 2, 1, 20, 40), (1, 4, 4, 5, 14, 16)])
def test_sliding_window(causal: bool, shape: tuple[int, ...]) -> None:
    q, k, v = make(*shape)
    out = SdpaBackend(window=4).forward(q, k, v, causal=causal)
    ref = reference(q, k, v, causal=causal, window=4)
    assert_close_fp32(out, ref)
    assert (ref - reference(q, k, v, causal=causal)).abs().max() > 1e-3  # the window changes the answer


def test_custom_scale() -> None:
    q, k, v = make(2, 4, 2, 6, 6, 32)
    out = SdpaBackend().forward(q, k, v, causal=True, scale=0.3)
    assert_close_fp32(out, reference(q, k, v, causal=True, scale=0.3))


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(2, 8, 2, 33, 33, 64), (1, 8, 1, 1, 65, 72), (2, 4, 2, 7, 23, 40)])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_low_precision_flash_rule(dtype: torch.dtype, shape: tuple[int, ...], causal: bool) -> None:
    q, k, v = make(*shape, dtype=dtype)
    out = SdpaBackend().forward(q, k, v, causal=causal)
    assert out.dtype == dtype
    ref = reference(q, k, v, causal=causal)
    plain = reference(q, k, v, causal=causal, dtype=dtype)
    assert_flash_rule(out, plain, ref)


# --------------------------------------------------------------------------------------------- varlen


def pack(lengths: list[int], heads: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    x = torch.randn(total, heads, d, generator=g).to(dtype)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return x, cu


def dense(x: torch.Tensor) -> torch.Tensor:
    """(len, H, D) -> (1, H, len, D)"""
    return x.transpose(0, 1)[None]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=["fp32", "bf16", "fp16"])
def test_varlen_matches_per_sequence_reference(causal: bool, dtype: torch.dtype) -> None:
    lengths = [5, 11, 3]
    q, cu = pack(lengths, 8, 40, dtype, seed=0)
    k, _ = pack(lengths, 2, 40, dtype, seed=1)
    v, _ = pack(lengths, 2, 40, dtype, seed=2)
    out = SdpaBackend().forward_varlen(
        q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=11, max_seqlen_k=11, causal=causal
    )
    assert out.shape == q.shape and out.dtype == dtype
    for s, e in zip(cu.tolist(), cu.tolist()[1:], strict=False):
        ref = reference(dense(q[s:e]), dense(k[s:e]), dense(v[s:e]), causal=causal)[0].transpose(0, 1)
        if dtype == torch.float32:
            assert_close_fp32(out[s:e], ref)
        else:
            plain = reference(dense(q[s:e]), dense(k[s:e]), dense(v[s:e]), causal=causal, dtype=dtype)
            assert_flash_rule(out[s:e], plain[0].transpose(0, 1), ref)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_varlen_no_leakage_across_sequences(causal: bool) -> None:
    lengths = [6, 9, 4]
    q, cu = pack(lengths, 4, 16, seed=0)
    k, _ = pack(lengths, 4, 16, seed=1)
    v, _ = pack(lengths, 4, 16, seed=2)
    backend = SdpaBackend()
    kw = dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=9, max_seqlen_k=9, causal=causal)
    before = backend.forward_varlen(q, k, v, **kw)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[6:15] += 5.0  # every token of sequence 2
    after = backend.forward_varlen(q2, k2, v2, **kw)
    assert torch.equal(before[:6], after[:6])
    assert torch.equal(before[15:], after[15:])
    assert not torch.allclose(before[6:15], after[6:15])


def test_varlen_decode_shapes_bottom_right_and_tail_zero() -> None:
    # One query per sequence over caches of 5, 11 and 3 keys; q has 2 padding rows past cu_seqlens_q[-1].
    k_lengths = [5, 11, 3]
    q, _ = pack([1, 1, 1, 2], 4, 32, seed=0)
    cu_q = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    k, cu_k = pack(k_lengths, 2, 32, seed=1)
    v, _ = pack(k_lengths, 2, 32, seed=2)
    out = SdpaBackend().forward_varlen(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=1, max_seqlen_k=11, causal=True
    )
    starts = cu_k.tolist()
    for i in range(3):
        ks, ke = starts[i], starts[i + 1]
        ref = reference(dense(q[i : i + 1]), dense(k[ks:ke]), dense(v[ks:ke]), causal=True)[0].transpose(0, 1)
        assert_close_fp32(out[i : i + 1], ref)
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))


def test_varlen_empty_sequence() -> None:
    q, _ = pack([4, 3], 2, 8)
    cu = torch.tensor([0, 4, 4, 7], dtype=torch.int64)
    out = SdpaBackend().forward_varlen(
        q, q[:, :1], q[:, :1], cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=4, causal=True
    )
    ref = reference(dense(q[4:7]), dense(q[4:7, :1]), dense(q[4:7, :1]), causal=True)[0].transpose(0, 1)
    assert_close_fp32(out[4:7], ref)


# --------------------------------------------------------------------------------------------- errors


def _raises(fn, *needles: str) -> UnsupportedAttention:
    with pytest.raises(UnsupportedAttention) as info:
        fn()
    text = str(info.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    assert info.value.fix, "every refusal names its fix"
    return info.value


def test_errors_dense() -> None:
    b = SdpaBackend()
    q, k, v = make(1, 6, 4, 3, 3, 8)
    err = _raises(lambda: b.forward(q, k, v, causal=True), "(6)", "(4)")
    assert "num_key_value_heads" in err.fix
    q, k, v = make(1, 4, 2, 3, 3, 8)
    _raises(lambda: b.forward(q, k[..., :4], v[..., :4], causal=True), "head_dim=8", "(1, 2, 3, 4)")
    _raises(lambda: b.forward(q[0], k[0], v[0], causal=True), "4-D", "(4, 3, 8)", "forward_varlen")
    err = _raises(lambda: b.forward(q.long(), k.long(), v.long(), causal=True), "torch.int64")
    assert ".to(torch.bfloat16)" in err.fix
    _raises(lambda: b.forward(q, k.double(), v, causal=True), "k=torch.float64")
    _raises(lambda: b.forward(q, k, v, causal=True, mask=torch.zeros(3, 3, dtype=torch.int64)), "torch.int64")


def test_errors_varlen() -> None:
    b = SdpaBackend()
    q, cu = pack([3, 4], 4, 8)
    kv, _ = pack([3, 4], 2, 8)

    def call(cu_q=cu, cu_k=cu, max_q=4, max_k=4, q=q, k=kv, v=kv):
        return b.forward_varlen(
            q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k, causal=True
        )

    call()  # the valid call works
    _raises(lambda: call(cu_q=cu.float()), "cu_seqlens_q", "torch.float32")
    _raises(lambda: call(cu_k=torch.tensor([0, 5, 4], dtype=torch.int32)), "cu_seqlens_k", "[0, 5, 4]")
    _raises(lambda: call(cu_q=torch.tensor([1, 3, 7], dtype=torch.int32)), "start at 0", "[1, 3, 7]")
    _raises(lambda: call(cu_q=torch.tensor([0, 3, 9], dtype=torch.int32)), "ends at 9", "7 tokens")
    err = _raises(lambda: call(max_q=3), "4 tokens", "max_seqlen=3")
    assert "= 4" in err.fix
    _raises(lambda: call(cu_k=torch.tensor([0, 7], dtype=torch.int32), max_k=7), "2 sequences", "1")
    _raises(lambda: call(q=q[None], k=kv[None], v=kv[None]), "3-D", "(1, 7, 4, 8)")
    _raises(lambda: call(k=kv[:, :, :4], v=kv[:, :, :4]), "head_dim=8")
    _raises(lambda: call(k=q[:, :3], v=q[:, :3]), "(4)", "(3)")


# --------------------------------------------------------------------------------------------- backend_for


def test_backend_for_serves_and_defers() -> None:
    spec = AttentionSpec(dtype="bfloat16", head_dim=72, num_heads=8, num_kv_heads=2)
    backend = backend_for(spec)
    assert isinstance(backend, SdpaBackend) and isinstance(backend, AttentionBackend)
    assert backend.name == "sdpa" and backend.window is None
    assert backend_for(spec) is not backend  # a fresh instance: changing one changes nobody else's
    windowed = backend_for(
        AttentionSpec(dtype="float32", head_dim=64, num_heads=4, num_kv_heads=4, window=128)
    )
    assert windowed is not None and windowed.window == 128
    assert (
        backend_for(AttentionSpec(dtype="float32", head_dim=64, num_heads=4, num_kv_heads=4, dropout=True))
        is None
    )
    assert backend_for(AttentionSpec(dtype="int8", head_dim=64, num_heads=4, num_kv_heads=4)) is None
    assert backend_for(AttentionSpec(dtype="float16", head_dim=64, num_heads=6, num_kv_heads=4)) is None
    assert (
        backend_for(AttentionSpec(dtype="float16", head_dim=64, num_heads=4, num_kv_heads=4, window=0))
        is None
    )
