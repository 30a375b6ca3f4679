"""``actor.strategy=megatron`` on the host: Hugging Face -> megatron-core -> Hugging Face through
mbridge, bit-exact, for locally built Qwen2 (tied and untied embeddings, float32 and bfloat16) and
Llama models; the actor's checkpoint written through the strategy; and the configuration checks.
megatron-core's forward pass needs an accelerator and does not run here.

Skipped where megatron-core or mbridge is not installed (``pip install -e "core[megatron]"``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("megatron.core", reason='megatron-core is not installed: pip install -e "core[megatron]"')
pytest.importorskip("mbridge", reason='mbridge is not installed: pip install -e "core[megatron]"')

from rlport.errors import ConfigError
from rlport.extras import MissingExtra
from rlport.train.cli import build_config
from rlport.train.driver.preflight import check_megatron

SIZES = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


@pytest.fixture
def group() -> Iterator[None]:
    """A one-rank gloo group and Megatron's parallel state over it, torn down after."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    from rlport.train.strategies.megatron_bridge import initialize_parallel

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    initialize_parallel()
    yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


def _save(tmp: Path, arch: str, tied: bool, dtype: torch.dtype) -> tuple[Path, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = (
        (Qwen2Config, Qwen2ForCausalLM) if arch == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    )
    torch.manual_seed(0)
    model = model_cls(config_cls(**SIZES, tie_word_embeddings=tied)).to(dtype)
    path = tmp / f"{arch}-{tied}-{dtype}"
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize(
    ("arch", "tied", "dtype"),
    [
        ("qwen2", False, torch.float32),
        ("qwen2", True, torch.float32),
        ("qwen2", False, torch.bfloat16),
        ("llama", False, torch.float32),
    ],
)
def test_hf_to_megatron_to_hf_is_bit_exact(
    arch: str, tied: bool, dtype: torch.dtype, tmp_path: Path, group: None
) -> None:
    from rlport.train.strategies import megatron_bridge

    path, hf = _save(tmp_path, arch, tied, dtype)
    bridge = megatron_bridge.make_bridge(hf.config, dtype=dtype)
    chunks = megatron_bridge.build_models(bridge, str(path), device="cpu")
    params = dict(chunks[0].named_parameters())
    qkv = next(v for k, v in params.items() if k.endswith("layers.0.self_attention.linear_qkv.weight"))
    fc1 = next(v for k, v in params.items() if k.endswith("layers.0.mlp.linear_fc1.weight"))
    head_dim = SIZES["hidden_size"] // SIZES["num_attention_heads"]
    assert qkv.shape == ((SIZES["num_attention_heads"] + 2 * SIZES["num_key_value_heads"]) * head_dim, 64)
    assert fc1.shape == (2 * SIZES["intermediate_size"], 64)  # gate and up fused: a real conversion
    assert all(p.dtype == dtype for p in params.values())
    expected = {k: v for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")}
    exported = dict(megatron_bridge.hf_weights(bridge, chunks))
    assert exported.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(exported[name].cpu(), tensor), name


def test_local_spec_names_are_renamed_by_megatrons_own_key_map(group: None) -> None:
    from transformers import Qwen2Config

    from rlport.train.strategies import megatron_bridge

    bridge = megatron_bridge.make_bridge(Qwen2Config(**SIZES), dtype=torch.float32, local_spec=True)
    bridge._get_transformer_layer_spec()
    assert (
        bridge.fused_name("decoder.layers.3.input_layernorm.weight")
        == "decoder.layers.3.self_attention.linear_qkv.layer_norm_weight"
    )
    assert bridge.fused_name("decoder.layers.0.pre_mlp_layernorm.weight") == (
        "decoder.layers.0.mlp.linear_fc1.layer_norm_weight"
    )
    assert (
        bridge.fused_name("decoder.layers.0.mlp.linear_fc2.weight")
        == "decoder.layers.0.mlp.linear_fc2.weight"
    )


def test_the_actor_saves_its_megatron_model_as_the_hf_checkpoint_it_loaded(tmp_path: Path) -> None:
    """The actor's path: the strategy builds the Megatron model (starting its own one-rank group),
    hands out Hugging Face weights for the sync, and writes a Hugging Face folder that loads back to
    the same weights."""
    import torch.distributed as dist
    from megatron.core import parallel_state
    from transformers import AutoModelForCausalLM

    import rlport
    from rlport.train.models.actor import Actor

    path, hf = _save(tmp_path, "qwen2", False, torch.float32)
    cfg = build_config(
        [f"model.path={path}", "actor.strategy=megatron", "model.attn_implementation=eager"], demo=False
    )
    try:
        actor = Actor(cfg, path=str(path), device="cpu", rt=rlport.init())
        assert actor.strategy.name == "megatron" and type(actor.module).__name__ == "Qwen2ForCausalLM"
        # the loss is scaled by, and its counts summed over, Megatron's data-parallel group: one rank
        assert actor.strategy.data_parallel() == (1, parallel_state.get_data_parallel_group())
        sent = dict(actor.full_parameters())
        actor.save(tmp_path / "out")
    finally:
        parallel_state.destroy_model_parallel()
        if dist.is_initialized():
            dist.destroy_process_group()
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, tensor in hf.state_dict().items():
        assert torch.equal(back[name], tensor), name
        assert torch.equal(sent[name], tensor), name


@pytest.mark.parametrize(
    ("overrides", "message", "fix"),
    [
        (
            ["trainer.workers=3", "data.train_batch_size=12", "actor.megatron.tensor_model_parallel_size=2"],
            "not a multiple",
            "trainer.workers=2",
        ),
        (
            ["trainer.workers=2", "actor.megatron.tensor_model_parallel_size=2"],
            "actor.megatron.tensor_model_parallel_size=2",
            "actor.megatron.tensor_model_parallel_size=1",
        ),
        (["actor.megatron.pipeline_model_parallel_size=0"], "at least 1", "pipeline_model_parallel_size=1"),
        (["actor.offload=true"], "actor.offload=true", "actor.offload=false"),
    ],
)
def test_megatron_sizes_are_checked_before_work(overrides: list[str], message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_megatron(build_config(["actor.strategy=megatron", *overrides], demo=True))
    assert message in err.value.message and fix in err.value.fix


def test_missing_megatron_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mbridge", None)
    with pytest.raises(MissingExtra) as err:
        check_megatron(build_config(["actor.strategy=megatron"], demo=True))
    assert "mbridge" in err.value.message and err.value.fix == 'pip install "rlport[megatron]"'
