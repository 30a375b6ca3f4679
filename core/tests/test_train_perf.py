"""Throughput and MFU: the FLOPs formula against torch's own FLOP counter on a real forward and
backward, the peak lookup by device name, and MFU left out (never guessed) without a peak."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from rlport.devices import module_info, peaks
from rlport.train.tracking import perf
from rlport.train.tracking.metrics import step_line


def _config(**kw: int):
    from transformers import Qwen2Config

    base = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    base.update(kw)
    return Qwen2Config(**base)


def test_matmul_parameters_are_the_linear_layers_plus_embedding_and_head() -> None:
    from transformers import Qwen2ForCausalLM

    cfg = _config()
    model = Qwen2ForCausalLM(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    embedding = model.model.embed_tokens.weight.numel()
    # lm_head is one of the Linear layers; the embedding is counted once more as in verl
    assert perf.matmul_parameters(cfg) == linear + embedding


def test_training_flops_match_torchs_flop_counter_on_forward_and_backward() -> None:
    """One unpadded sequence through eager attention: torch counts every matmul of the forward and
    backward. The formula counts the embedding as a matmul too (verl's convention, 6 * V * H per
    token), which the lookup does not do: that is the only difference."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Qwen2ForCausalLM

    cfg = _config()
    model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="eager")
    s = 24
    ids = torch.randint(0, cfg.vocab_size, (1, s))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids).logits.float().sum().backward()
    embedding = 6 * cfg.vocab_size * cfg.hidden_size * s
    assert counter.get_total_flops() == perf.training_flops(cfg, [s]) - embedding


def test_attention_term_grows_with_the_square_of_each_sequence() -> None:
    cfg = _config()
    dense = 6 * perf.matmul_parameters(cfg)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    expected = dense * 8 + 12 * (3 * 3 + 5 * 5) * head_dim * cfg.num_attention_heads * cfg.num_hidden_layers
    assert perf.training_flops(cfg, [3, 5]) == expected


def test_mfu_needs_a_known_peak_for_the_compute_dtype() -> None:
    table = {"bfloat16": 1e15}
    assert perf.mfu(5e14, 1.0, table, "bfloat16") == pytest.approx(0.5)
    assert perf.mfu(5e14, 1.0, table, "float32") is None
    assert perf.mfu(5e14, 1.0, {}, "bfloat16") is None
    assert perf.peak_key("float32", "highest") == "float32"
    assert perf.peak_key("float32", "high") == perf.TF32
    assert perf.peak_key("bfloat16", "high") == "bfloat16"
    cfg = _config()
    known = perf.update_metrics(cfg, [10, 20], passes=2, seconds=0.5, peak_flops=table, key="bfloat16")
    assert known["perf/update_tokens_per_s"] == pytest.approx(120.0)
    assert known["perf/mfu"] == pytest.approx(2 * perf.training_flops(cfg, [10, 20]) / 0.5 / 1e15)
    unknown = perf.update_metrics(cfg, [10, 20], passes=2, seconds=0.5, peak_flops={}, key="bfloat16")
    assert "perf/mfu" not in unknown


def test_step_line_shows_mfu_only_when_measured() -> None:
    m = {
        "step": 3,
        "reward/mean": 0.5,
        "reward/std": 0.1,
        "actor/pg_loss": 0.0,
        "actor/kl": 0.0,
        "actor/entropy": 1.0,
        "rollout/logprob_mismatch": 0.0,
        "perf/rollout_tokens_per_s": 100.0,
        "perf/tokens_per_s": 250.0,
        "time/step": 1.0,
    }
    assert "step 250 tok/s" in step_line(m, 10) and "mfu" not in step_line(m, 10)
    assert "mfu 12.5%" in step_line({**m, "perf/mfu": 0.125}, 10)


def test_peaks_match_by_name_most_specific_first_and_never_for_mixed_devices() -> None:
    table = ((r"\bL40S\b", {"bfloat16": 3.0}), (r"\bL4\b", {"bfloat16": 1.0}))
    assert peaks.match(["NVIDIA L40S"], table) == {"bfloat16": 3.0}
    assert peaks.match(["NVIDIA L4", "NVIDIA L4"], table) == {"bfloat16": 1.0}
    assert peaks.match(["NVIDIA L40"], table) == {}  # not listed: no peak
    assert peaks.match(["NVIDIA L4", "NVIDIA L40S"], table) == {}  # two models: no single peak
    assert peaks.match([], table) == {}


def test_device_info_carries_the_peaks_of_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("fake_accel_peaks")
    fake.device_count = lambda: 1
    fake.get_device_properties = lambda i: types.SimpleNamespace(name="Accel X9", total_memory=2**30)
    monkeypatch.setitem(sys.modules, "fake_accel_peaks", fake)
    args = dict(visible_devices_env=None, ray_resource=None, collectives_backend="gloo")
    info = module_info.describe_module(
        "fake_accel_peaks", "accel", peak_table=((r"X9", {"bfloat16": 9e14}),), **args
    )
    assert info.peak_flops == {"bfloat16": 9e14}
    assert module_info.describe_module("fake_accel_peaks", "accel", **args).peak_flops == {}


def test_the_cpu_device_has_no_peak() -> None:
    import rlport

    assert rlport.init().device.peak_flops == {}
