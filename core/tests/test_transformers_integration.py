"""``attn_implementation="rlport"`` on tiny real transformers models gives the logits of ``"sdpa"`` and
``"eager"``, resolves its backend once, and refuses what it cannot do."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from transformers import (
    AttentionInterface,
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import rlport
from rlport.attention import transformers_integration as ti
from rlport.attention.sdpa import SdpaBackend
from rlport.errors import UnsupportedAttention
from rlport.types import AttentionSpec

ATOL = 1e-5

CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "qwen2-gqa": lambda: Qwen2Config(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=100,
    ),
    "llama-mqa": lambda: LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=100,
    ),
    "qwen2-sliding": lambda: Qwen2Config(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=100,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
    ),
}
LENGTHS = [12, 7, 4]


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """``"rlport"`` registered against the real process runtime, with no backend resolved yet."""
    assert ti.register() == "rlport"
    ti.reset()
    yield
    ti.reset()


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(CONFIGS[name](), attn_implementation="rlport").eval()


def padded_batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    width = max(LENGTHS)
    ids = torch.randint(1, 100, (len(LENGTHS), width), generator=g)
    mask = torch.zeros(len(LENGTHS), width, dtype=torch.long)
    for row, n in enumerate(LENGTHS):
        if side == "left":
            mask[row, width - n :] = 1
        else:
            mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


@torch.no_grad()
def logits_with(model: torch.nn.Module, implementation: str, **inputs: Any) -> torch.Tensor:
    model.set_attn_implementation(implementation)
    try:
        return model(**inputs).logits
    finally:
        model.set_attn_implementation("rlport")


def test_register_is_idempotent() -> None:
    assert ti.register() == "rlport"
    assert ti.register() == "rlport"
    assert AttentionInterface()["rlport"] is ti.rlport_attention_forward
    assert AttentionMaskInterface()["rlport"] is sdpa_mask


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_padded_batch_matches_sdpa_and_eager(config: str, side: str) -> None:
    model = make_model(config)
    ids, mask = padded_batch(side)
    ours = logits_with(model, "rlport", input_ids=ids, attention_mask=mask)
    valid = mask.bool()
    for other in ("sdpa", "eager"):
        theirs = logits_with(model, other, input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(ours[valid], theirs[valid], atol=ATOL, rtol=1e-5)
    assert ti.resolved(), "the model's attention went through the resolved backend"


@pytest.mark.parametrize("config", list(CONFIGS))
def test_right_padded_rows_equal_unpadded_sequences(config: str) -> None:
    model = make_model(config)
    ids, mask = padded_batch("right")
    batch = logits_with(model, "rlport", input_ids=ids, attention_mask=mask)
    for row, n in enumerate(LENGTHS):
        alone = logits_with(model, "rlport", input_ids=ids[row : row + 1, :n])
        torch.testing.assert_close(batch[row, :n], alone[0], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("config", ["qwen2-gqa", "qwen2-sliding"])
def test_cached_decode_and_chunk_match_sdpa(config: str) -> None:
    """Prefill, one decode token (Lq=1) and a 3-token chunk (Lq<Lk) over a cache, left-padded."""
    model = make_model(config)
    ids, mask = padded_batch("left")
    g = torch.Generator().manual_seed(2)
    step = torch.randint(1, 100, (len(LENGTHS), 1), generator=g)
    chunk = torch.randint(1, 100, (len(LENGTHS), 3), generator=g)
    results: dict[str, list[torch.Tensor]] = {}
    for implementation in ("rlport", "sdpa"):
        model.set_attn_implementation(implementation)
        cache = DynamicCache(config=model.config)
        out = []
        with torch.no_grad():
            m = mask
            out.append(model(input_ids=ids, attention_mask=m, past_key_values=cache, use_cache=True).logits)
            m = torch.cat([m, torch.ones_like(step)], dim=1)
            out.append(model(input_ids=step, attention_mask=m, past_key_values=cache, use_cache=True).logits)
            m = torch.cat([m, torch.ones_like(chunk)], dim=1)
            out.append(model(input_ids=chunk, attention_mask=m, past_key_values=cache, use_cache=True).logits)
        results[implementation] = out
    model.set_attn_implementation("rlport")
    valid = mask.bool()
    torch.testing.assert_close(results["rlport"][0][valid], results["sdpa"][0][valid], atol=ATOL, rtol=1e-5)
    for ours, theirs in zip(results["rlport"][1:], results["sdpa"][1:], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


def test_greedy_generate_matches_sdpa() -> None:
    model = make_model("qwen2-gqa")
    ids, mask = padded_batch("left")
    outputs = {}
    for implementation in ("rlport", "sdpa"):
        model.set_attn_implementation(implementation)
        outputs[implementation] = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0
        )
    model.set_attn_implementation("rlport")
    assert outputs["rlport"].shape == (len(LENGTHS), max(LENGTHS) + 6)
    assert torch.equal(outputs["rlport"], outputs["sdpa"])


def test_backend_resolved_once_per_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = rlport.current()
    original = runtime.attention_backend
    specs: list[AttentionSpec] = []
    forwards: list[int] = []

    class Counting(SdpaBackend):
        def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            forwards.append(1)
            return super().forward(*args, **kwargs)

    def spy(spec: AttentionSpec) -> Any:
        specs.append(spec)
        backend = original(spec)
        assert backend.name == "sdpa"  # the reference answered through the real hook
        counting = Counting()
        return counting

    monkeypatch.setattr(runtime, "attention_backend", spy)
    model = make_model("qwen2-gqa")
    ids, mask = padded_batch("right")
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert specs == [
        AttentionSpec(
            dtype="float32", head_dim=16, num_heads=4, num_kv_heads=2, causal=True, device_type="cpu"
        )
    ]
    # 3 forwards + a 4-token generate (prefill and 3 decode steps), each through 2 layers
    assert len(forwards) == 2 * (3 + 4)
    model.to(torch.bfloat16)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert [s.dtype for s in specs] == ["float32", "bfloat16"]


def test_packed_sequences_match_separate_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packed input with position_ids (mask path) and with flash-style cu_seq_lens (varlen path); as in
    training, without a cache (transformers detects packing from position_ids only then)."""
    model = make_model("qwen2-gqa")
    lengths = [5, 8, 3]
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(1, 100, (1, n), generator=g) for n in lengths]
    packed = torch.cat(seqs, dim=1)
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    cu = torch.tensor([0, 5, 13, 16], dtype=torch.int32)
    varlen_calls: list[int] = []
    original = SdpaBackend.forward_varlen

    def counting(self: SdpaBackend, *args: Any, **kwargs: Any) -> torch.Tensor:
        varlen_calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SdpaBackend, "forward_varlen", counting)
    with torch.no_grad():
        alone = torch.cat([model(input_ids=s).logits for s in seqs], dim=1)
        by_mask = model(input_ids=packed, position_ids=position_ids, use_cache=False).logits
        by_varlen = model(
            input_ids=packed,
            position_ids=position_ids,
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=8,
            max_length_k=8,
            use_cache=False,
        ).logits
    assert varlen_calls == [1, 1]  # one per layer, only for the cu_seq_lens call
    torch.testing.assert_close(by_mask, alone, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(by_varlen, alone, atol=ATOL, rtol=1e-5)
    assert any(key[5] for key in ti.resolved()), "a varlen spec was resolved"


class _Layer(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.is_causal = True
        self.num_key_value_groups = groups
        self.layer_idx = 0


@pytest.mark.parametrize("mask_kind", ["none", "bool"])
def test_position_bias_and_static_cache_prefill_match_transformers_sdpa(mask_kind: str) -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, 5, 16, generator=g)
    k = torch.randn(2, 2, 9, 16, generator=g)  # 9 cache slots for 5 queries: an empty static cache at prefill
    v = torch.randn(2, 2, 9, 16, generator=g)
    mask = None if mask_kind == "none" else torch.rand(2, 1, 5, 9, generator=g) > 0.3
    if mask is not None:
        mask[..., 0] = True
    bias = torch.randn(1, 4, 5, 9, generator=g)
    layer = _Layer(groups=2)
    for extra in ({}, {"position_bias": bias}):
        ours, _ = ti.rlport_attention_forward(layer, q, k, v, mask, scaling=0.25, **extra)
        theirs, _ = sdpa_attention_forward(layer, q, k, v, mask, scaling=0.25, **extra)
        assert ours.shape == (2, 5, 4, 16)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


def test_refuses_dropout_and_softcap() -> None:
    model = make_model("qwen2-gqa")
    model.config.attention_dropout = 0.1
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.1
    model.train()
    ids, mask = padded_batch("right")
    with pytest.raises(UnsupportedAttention) as info:
        model(input_ids=ids, attention_mask=mask)
    assert "0.1" in str(info.value) and "attention_dropout = 0.0" in info.value.fix
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(UnsupportedAttention) as info:
        ti.rlport_attention_forward(_Layer(1), q, q, q, None, softcap=30.0)
    assert "softcap=30.0" in str(info.value) and "eager" in info.value.fix


def test_explicit_runtime_is_used_and_replaced() -> None:
    class FakeRuntime:
        def __init__(self) -> None:
            self.specs: list[AttentionSpec] = []

        def attention_backend(self, spec: AttentionSpec) -> SdpaBackend:
            self.specs.append(spec)
            return SdpaBackend()

    fake = FakeRuntime()
    try:
        ti.register(runtime=fake)
        model = make_model("llama-mqa")
        ids, mask = padded_batch("left")
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            model(input_ids=ids, attention_mask=mask)
        assert [(s.num_heads, s.num_kv_heads, s.head_dim) for s in fake.specs] == [(4, 1, 16)]
    finally:
        ti.register()
    assert ti.resolved() == {}, "switching runtimes forgets backends resolved by the old one"
