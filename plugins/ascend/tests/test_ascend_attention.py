"""FusionAttention against the fake ``torch_npu.npu_fusion_attention`` (which computes the documented
math: True = masked, scale default 1, sparse modes 2/3/4 with the compressed 2048 mask, cumulative
``actual_seq_*``): every result is judged by the conformance tolerance rule against the float64
reference, and every call's arguments are checked."""

from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch
from ascend_fakes import fake_npu_fixture  # noqa: F401  (the fixture "fake_npu")

from rlport.errors import UnsupportedAttention
from rlport.types import AttentionSpec
from rlport_ascend.attention import BAND, CAUSAL_BOTTOM_RIGHT, FusionAttention, backend_for
from rlport_conformance import attention_math as am
from rlport_conformance.status import Status
from rlport_conformance.tolerance import judge

DT = torch.bfloat16


def _qkv(b, h, hkv, lq, lk, d=32, seed=0):
    return (
        am.randn((b, h, lq, d), seed=seed, dtype=DT, device="cpu"),
        am.randn((b, hkv, lk, d), seed=seed + 1, dtype=DT, device="cpu"),
        am.randn((b, hkv, lk, d), seed=seed + 2, dtype=DT, device="cpu"),
    )


def _judge(out, q, k, v, *, causal, window=None, mask=None, scale=None):
    ref = am.reference(q, k, v, causal=causal, window=window, mask=mask, scale=scale)
    if mask is None:
        plain = am.plain_error(q, k, v, ref, causal=causal, window=window, scale=scale)
    else:
        plain = am.max_error(
            am.plain_torch(q, k, v, causal=causal, window=window, mask=mask, scale=scale), ref
        )
    verdict = judge(am.max_error(out, ref), plain, am.rounding_error(ref, q.dtype))
    assert verdict.status in (Status.PASS, Status.QUALITY_WARNING), verdict.message


def _last(fake: ModuleType) -> dict:
    return fake.calls("npu_fusion_attention")[-1]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("lq", "lk"), [(16, 16), (4, 19), (1, 9)])
def test_dense_bnsd_gqa(fake_npu: ModuleType, causal: bool, lq: int, lk: int) -> None:
    q, k, v = _qkv(2, 8, 2, lq, lk)
    backend = FusionAttention(fake_npu.npu_fusion_attention)
    out = backend.forward(q, k, v, causal=causal)
    _judge(out, q, k, v, causal=causal)
    call = _last(fake_npu)
    assert call["layout"] == "BNSD" and call["head_num"] == 8 and call["k_shape"] == (2, 2, lk, 32)
    assert call["scale"] == pytest.approx(1 / math.sqrt(32))  # explicit: the kernel's default is 1
    expected_mode = CAUSAL_BOTTOM_RIGHT if causal and lq > 1 else 0
    assert call["sparse_mode"] == expected_mode
    assert call["atten_mask_shape"] == ((2048, 2048) if expected_mode else None)
    assert backend.fallbacks == 0


def test_caller_scale_is_passed_through(fake_npu: ModuleType) -> None:
    q, k, v = _qkv(1, 4, 4, 8, 8)
    out = FusionAttention(fake_npu.npu_fusion_attention).forward(q, k, v, causal=True, scale=0.5)
    _judge(out, q, k, v, causal=True, scale=0.5)
    assert _last(fake_npu)["scale"] == 0.5


def test_more_queries_than_keys_causal_zeroes_rows_that_see_no_key(fake_npu: ModuleType) -> None:
    """Bottom-right causal with Lq > Lk: the first rows attend nothing and must be zero; the fake
    returns the mean of the values there (as Huawei's golden reference does)."""
    q, k, v = _qkv(1, 2, 2, 7, 4)
    out = FusionAttention(fake_npu.npu_fusion_attention).forward(q, k, v, causal=True)
    assert torch.count_nonzero(out[:, :, :3]) == 0
    _judge(out, q, k, v, causal=True)
    call = _last(fake_npu)
    assert call["sparse_mode"] == 0 and call["atten_mask_shape"] == (1, 1, 7, 4)


@pytest.mark.parametrize("causal", [True, False])
def test_sliding_window_square_uses_the_band_mode(fake_npu: ModuleType, causal: bool) -> None:
    q, k, v = _qkv(2, 4, 2, 24, 24)
    out = FusionAttention(fake_npu.npu_fusion_attention, window=5).forward(q, k, v, causal=causal)
    _judge(out, q, k, v, causal=causal, window=5)
    call = _last(fake_npu)
    assert call["sparse_mode"] == BAND and call["pre_tockens"] == 4
    assert call["next_tockens"] == (0 if causal else 4)


def test_sliding_window_rectangular_uses_an_explicit_mask(fake_npu: ModuleType) -> None:
    q, k, v = _qkv(1, 4, 4, 5, 20)
    out = FusionAttention(fake_npu.npu_fusion_attention, window=6).forward(q, k, v, causal=True)
    _judge(out, q, k, v, causal=True, window=6)
    assert _last(fake_npu)["sparse_mode"] == 0 and _last(fake_npu)["atten_mask_shape"] == (1, 1, 5, 20)


def _padding_mask(b: int, lq: int, lk: int, pad: list[int]) -> torch.Tensor:
    """transformers-style (B, 1, Lq, Lk) boolean mask, True = attend: causal, left padding ``pad[b]``."""
    allowed = am.allowed_mask(lq, lk, causal=True, window=None)
    keys = torch.arange(lk)[None, :]
    return torch.stack([allowed & (keys >= p) for p in pad])[:, None].expand(b, 1, lq, lk).clone()


def test_padded_batch_boolean_mask_is_inverted_and_empty_rows_zeroed(fake_npu: ModuleType) -> None:
    q, k, v = _qkv(3, 4, 2, 10, 10)
    mask = _padding_mask(3, 10, 10, [0, 3, 6])
    out = FusionAttention(fake_npu.npu_fusion_attention).forward(q, k, v, causal=False, mask=mask)
    _judge(out, q, k, v, causal=False, mask=mask)
    assert torch.count_nonzero(out[2, :, :6]) == 0  # fully padded query rows
    assert _last(fake_npu)["atten_mask_shape"] == (3, 1, 10, 10)


def test_additive_mask_of_zero_and_lowest_is_exact_as_boolean(fake_npu: ModuleType) -> None:
    q, k, v = _qkv(2, 4, 4, 8, 8)
    allowed = _padding_mask(2, 8, 8, [0, 2])
    additive = torch.zeros(allowed.shape, dtype=DT).masked_fill(~allowed, torch.finfo(DT).min)
    backend = FusionAttention(fake_npu.npu_fusion_attention)
    out = backend.forward(q, k, v, causal=False, mask=additive)
    _judge(out, q, k, v, causal=False, mask=allowed)
    assert backend.fallbacks == 0 and _last(fake_npu)["sparse_mode"] == 0


def test_other_additive_masks_go_to_the_reference_backend(fake_npu: ModuleType) -> None:
    q, k, v = _qkv(1, 2, 2, 6, 6)
    bias = am.randn((1, 1, 6, 6), seed=9, dtype=DT, device="cpu")
    backend = FusionAttention(fake_npu.npu_fusion_attention)
    before = len(fake_npu.CALLS)
    out = backend.forward(q, k, v, causal=False, mask=bias)
    _judge(out, q, k, v, causal=False, mask=bias)
    assert backend.fallbacks == 1 and len(fake_npu.CALLS) == before


def _packed(lengths, h=4, hkv=2, d=32, seed=3):
    total = sum(lengths)
    q = am.randn((total, h, d), seed=seed, dtype=DT, device="cpu")
    k = am.randn((total, hkv, d), seed=seed + 1, dtype=DT, device="cpu")
    v = am.randn((total, hkv, d), seed=seed + 2, dtype=DT, device="cpu")
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu


@pytest.mark.parametrize("causal", [True, False])
def test_packed_tnd_with_cumulative_lengths_without_leading_zero(fake_npu: ModuleType, causal: bool) -> None:
    lengths = [5, 1, 9]
    q, k, v, cu = _packed(lengths)
    backend = FusionAttention(fake_npu.npu_fusion_attention)
    out = backend.forward_varlen(
        q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=9, max_seqlen_k=9, causal=causal
    )
    call = _last(fake_npu)
    assert call["layout"] == "TND" and call["head_num"] == 4
    assert call["actual_seq_qlen"] == [5, 6, 15] and call["actual_seq_kvlen"] == [5, 6, 15]
    assert call["sparse_mode"] == (CAUSAL_BOTTOM_RIGHT if causal else 0)
    start = 0
    for n in lengths:  # each sequence judged against its own dense reference
        part = [t[start : start + n].transpose(0, 1)[None] for t in (q, k, v)]
        _judge(out[start : start + n].transpose(0, 1)[None], *part, causal=causal)
        start += n


def test_packed_rows_past_the_last_sequence_are_zero(fake_npu: ModuleType) -> None:
    q, k, v, _ = _packed([4, 4])
    cu = torch.tensor([0, 3, 6], dtype=torch.int32)
    out = FusionAttention(fake_npu.npu_fusion_attention).forward_varlen(
        q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=3, max_seqlen_k=3, causal=True
    )
    assert torch.count_nonzero(out[6:]) == 0
    assert _last(fake_npu)["q_shape"][0] == 6 and _last(fake_npu)["actual_seq_qlen"] == [3, 6]


def test_packed_bad_cu_seqlens_fail_with_the_core_message(fake_npu: ModuleType) -> None:
    q, k, v, _ = _packed([4, 4])
    with pytest.raises(UnsupportedAttention, match="must start at 0"):
        FusionAttention(fake_npu.npu_fusion_attention).forward_varlen(
            q,
            k,
            v,
            cu_seqlens_q=torch.tensor([1, 8], dtype=torch.int32),
            cu_seqlens_k=torch.tensor([0, 8], dtype=torch.int32),
            max_seqlen_q=8,
            max_seqlen_k=8,
            causal=True,
        )


def test_a_fake_fed_wrong_arguments_would_fail(fake_npu: ModuleType) -> None:
    """The fake refuses what the kernel's contract forbids, so the tests above can fail."""
    q, k, v = _qkv(1, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="compressed"):
        fake_npu.npu_fusion_attention(q, k, v, 2, "BNSD", sparse_mode=3, atten_mask=torch.ones(4, 4).bool())
    qp, kp, vp, _ = _packed([3, 2])
    with pytest.raises(ValueError, match="cumulative"):  # lengths instead of cumulative sums
        fake_npu.npu_fusion_attention(qp, kp, vp, 4, "TND", actual_seq_qlen=[3, 2], actual_seq_kvlen=[3, 2])
    with pytest.raises(TypeError, match="float16/bfloat16/float32"):
        fake_npu.npu_fusion_attention(q.double(), k.double(), v.double(), 2, "BNSD")


def test_packed_empty_sequence_goes_to_the_kernel(fake_npu: ModuleType) -> None:
    """An empty sequence is documented as allowed (repeated cumulative length); no fallback."""
    q, k, v, _ = _packed([4, 3])
    cu = torch.tensor([0, 4, 4, 7], dtype=torch.int32)
    backend = FusionAttention(fake_npu.npu_fusion_attention)
    out = backend.forward_varlen(
        q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=4, max_seqlen_k=4, causal=True
    )
    assert backend.fallbacks == 0 and _last(fake_npu)["actual_seq_qlen"] == [4, 4, 7]
    for start, n in ((0, 4), (4, 3)):
        part = [t[start : start + n].transpose(0, 1)[None] for t in (q, k, v)]
        _judge(out[start : start + n].transpose(0, 1)[None], *part, causal=True)


def test_float32_is_served(fake_npu: ModuleType) -> None:
    q, k, v = (t.float() for t in _qkv(1, 4, 2, 9, 9))
    out = FusionAttention(fake_npu.npu_fusion_attention).forward(q, k, v, causal=True)
    _judge(out, q, k, v, causal=True)


def _spec(**kw) -> AttentionSpec:
    base = {"dtype": "bfloat16", "head_dim": 128, "num_heads": 8, "num_kv_heads": 2, "device_type": "npu"}
    return AttentionSpec(**{**base, **kw})


def test_backend_for_defers_what_the_kernel_cannot_do_exactly() -> None:
    op = object()
    assert isinstance(backend_for(_spec(), op), FusionAttention)
    assert backend_for(_spec(window=128), op).window == 128  # type: ignore[union-attr]
    for kw in (
        {"device_type": "cpu"},
        {"dtype": "float64"},
        {"dropout": True},
        {"head_dim": 1024},
        {"num_heads": 512, "num_kv_heads": 8},
        {"num_kv_heads": 3},
        {"varlen": True, "window": 64},
    ):
        assert backend_for(_spec(**kw), op) is None, kw
