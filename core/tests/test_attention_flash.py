"""The flash-attn translation (``rlport.attention.flash``) and SDPA with named kernels, checked
against a fake flash-attn module (``rlport.fakes.flash_attn``) that computes the library's documented
semantics with torch math on the host and records every argument. No flash-attn kernel runs here:
these tests prove the translation, not the kernel."""

from __future__ import annotations

import math

import pytest
import torch

from rlport.attention import flash
from rlport.attention.sdpa import SdpaBackend, SdpaKernelBackend
from rlport.errors import UnsupportedAttention
from rlport.fakes.flash_attn import FakeFlashAttn
from rlport.types import AttentionSpec


def _qkv(b: int, h: int, hkv: int, lq: int, lk: int, d: int, dtype: torch.dtype = torch.bfloat16):
    g = torch.Generator().manual_seed(b * 1000 + h * 100 + lq * 10 + lk + d)
    q = torch.randn(b, h, lq, d, generator=g).to(dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    v = torch.randn(b, hkv, lk, d, generator=g).to(dtype)
    return q, k, v


def _reference(window, q, k, v, **kw):
    return SdpaBackend(window=window).forward(q.double(), k.double(), v.double(), **kw)


def _backend(fake: FakeFlashAttn, window: int | None = None) -> flash.FlashAttnBackend:
    return flash.FlashAttnBackend(
        fake.module(), name="flash_attn_2", window=window, fallback=SdpaBackend(window=window)
    )


@pytest.mark.parametrize(
    ("lq", "lk", "causal", "window"),
    [
        (7, 7, True, None),
        (3, 9, True, None),  # chunked prefill: bottom-right alignment
        (1, 9, True, None),  # decode
        (9, 4, True, None),  # more queries than keys: first rows see no key
        (8, 8, False, None),
        (8, 8, True, 3),
        (2, 10, True, 4),
        (8, 8, False, 3),
        (5, 11, False, 2),
    ],
)
def test_dense_calls_translate_exactly(lq: int, lk: int, causal: bool, window: int | None) -> None:
    fake = FakeFlashAttn()
    backend = _backend(fake, window)
    q, k, v = _qkv(2, 8, 2, lq, lk, 64)  # GQA 8/2
    out = backend.forward(q, k, v, causal=causal, scale=0.3)
    (call,) = fake.calls
    assert call.function == "flash_attn_func"
    assert call.shapes == ((2, lq, 8, 64), (2, lk, 2, 64), (2, lk, 2, 64))  # (B, L, H, D), kv heads kept
    assert call.kwargs["softmax_scale"] == 0.3 and call.kwargs["causal"] is causal
    expected_window = (
        (-1, -1) if window is None else ((window - 1, 0) if causal else (window - 1, window - 1))
    )
    assert call.kwargs["window_size"] == expected_window
    assert out.shape == q.shape
    ref = _reference(window, q, k, v, causal=causal, scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=1e-2)


def test_the_default_scale_is_passed_explicitly_and_lse_tuples_are_unwrapped() -> None:
    fake = FakeFlashAttn(returns_lse=True)
    q, k, v = _qkv(1, 4, 4, 5, 5, 80, torch.float16)
    out = _backend(fake).forward(q, k, v, causal=True)
    assert fake.calls[0].kwargs["softmax_scale"] == pytest.approx(1 / math.sqrt(80), rel=1e-12)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_a_masked_call_goes_to_the_fallback_exactly(kind: str) -> None:
    fake = FakeFlashAttn()
    q, k, v = _qkv(2, 4, 2, 6, 6, 32)
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, :, :, :2] = False  # left padding in the second row
    mask = (
        keep if kind == "bool" else torch.zeros(keep.shape, dtype=q.dtype).masked_fill(~keep, float("-inf"))
    )
    out = _backend(fake).forward(q, k, v, causal=True, mask=mask)
    assert fake.calls == []  # the interface takes no mask
    torch.testing.assert_close(out, SdpaBackend().forward(q, k, v, causal=True, mask=mask))


def test_float32_goes_to_the_fallback_and_bad_input_raises_the_named_error() -> None:
    fake = FakeFlashAttn()
    backend = _backend(fake)
    q, k, v = _qkv(1, 4, 4, 3, 3, 16, torch.float32)
    torch.testing.assert_close(
        backend.forward(q, k, v, causal=True), SdpaBackend().forward(q, k, v, causal=True)
    )
    assert fake.calls == []
    q, k, v = _qkv(1, 6, 4, 3, 3, 16)
    with pytest.raises(UnsupportedAttention, match="multiple of key/value heads"):
        backend.forward(q, k, v, causal=True)


@pytest.mark.parametrize(("causal", "window"), [(True, None), (False, None), (True, 3), (False, 2)])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_varlen_calls_translate_exactly(causal: bool, window: int | None, index_dtype: torch.dtype) -> None:
    fake = FakeFlashAttn()
    backend = _backend(fake, window)
    lens_q, lens_k = [3, 1, 5], [3, 6, 5]
    q = torch.randn(sum(lens_q) + 2, 8, 64).bfloat16()  # two trailing rows outside every sequence
    k = torch.randn(sum(lens_k), 4, 64).bfloat16()
    v = torch.randn(sum(lens_k), 4, 64).bfloat16()
    cu_q = torch.tensor([0, 3, 4, 9], dtype=index_dtype)
    cu_k = torch.tensor([0, 3, 9, 14], dtype=index_dtype)
    out = backend.forward_varlen(
        q,
        k,
        v,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=5,
        max_seqlen_k=6,
        causal=causal,
        scale=0.2,
    )
    (call,) = fake.calls
    assert call.kwargs["cu_seqlens_q"] == [0, 3, 4, 9] and call.kwargs["cu_seqlens_k"] == [0, 3, 9, 14]
    assert (call.kwargs["max_seqlen_q"], call.kwargs["max_seqlen_k"]) == (5, 6)
    assert call.kwargs["softmax_scale"] == 0.2 and call.kwargs["causal"] is causal
    assert call.kwargs["window_size"] == flash.window_size(causal, window)
    assert torch.equal(out[9:], torch.zeros_like(out[9:]))  # unwritten rows are zeroed
    ref = SdpaBackend(window=window).forward_varlen(
        q.double(),
        k.double(),
        v.double(),
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=5,
        max_seqlen_k=6,
        causal=causal,
        scale=0.2,
    )
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=1e-2)


def test_varlen_refuses_float_cu_seqlens_and_mismatched_counts() -> None:
    backend = _backend(FakeFlashAttn())
    q = torch.randn(4, 2, 16).half()
    with pytest.raises(UnsupportedAttention, match="cu_seqlens_q must be a 1-D int32/int64"):
        backend.forward_varlen(
            q,
            q,
            q,
            cu_seqlens_q=torch.tensor([0.0, 4.0]),
            cu_seqlens_k=torch.tensor([0, 4]),
            max_seqlen_q=4,
            max_seqlen_k=4,
            causal=True,
        )
    with pytest.raises(UnsupportedAttention, match="describes 1 sequences but cu_seqlens_k 2"):
        backend.forward_varlen(
            q,
            q,
            q,
            cu_seqlens_q=torch.tensor([0, 4]),
            cu_seqlens_k=torch.tensor([0, 2, 4]),
            max_seqlen_q=4,
            max_seqlen_k=4,
            causal=True,
        )


def test_serves_states_the_interface_limits() -> None:
    spec = AttentionSpec(dtype="bfloat16", head_dim=128, num_heads=8, num_kv_heads=2)
    assert flash.serves(spec)
    assert not flash.serves(AttentionSpec(dtype="float32", head_dim=128, num_heads=8, num_kv_heads=2))
    assert not flash.serves(AttentionSpec(dtype="float16", head_dim=512, num_heads=8, num_kv_heads=2))
    assert not flash.serves(AttentionSpec(dtype="float16", head_dim=64, num_heads=6, num_kv_heads=4))
    assert not flash.serves(
        AttentionSpec(dtype="float16", head_dim=64, num_heads=8, num_kv_heads=8, dropout=True)
    )
    windowed = AttentionSpec(dtype="float16", head_dim=64, num_heads=8, num_kv_heads=8, window=16)
    assert flash.serves(windowed) and not flash.serves(windowed, window=False)
    assert flash.serves(
        AttentionSpec(dtype="float32", head_dim=64, num_heads=8, num_kv_heads=8), dtypes=("float32",)
    )


def test_sdpa_with_named_kernels_runs_under_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.nn.attention import SDPBackend

    import rlport.attention.sdpa as sdpa_mod

    seen: list[list[SDPBackend]] = []
    real = sdpa_mod.sdpa_kernel

    def recording(backends):
        seen.append(list(backends))
        return real(backends)

    monkeypatch.setattr(sdpa_mod, "sdpa_kernel", recording)
    backend = SdpaKernelBackend(("EFFICIENT_ATTENTION", "MATH"), window=3)
    assert backend.name == "sdpa[efficient_attention+math]"
    q, k, v = _qkv(1, 4, 2, 5, 5, 32, torch.float32)
    out = backend.forward(q, k, v, causal=True)
    torch.testing.assert_close(out, SdpaBackend(window=3).forward(q, k, v, causal=True))
    assert seen == [[SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]]
    with pytest.raises(ValueError, match="FLASH"):
        SdpaKernelBackend(("FLASH",))
    # The cuDNN kernel does not exist on the host: a list of only it cannot serve a call, and says so.
    with pytest.raises(RuntimeError):
        SdpaKernelBackend(("CUDNN_ATTENTION",)).forward(q, k, v, causal=True)
