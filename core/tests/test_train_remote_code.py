"""``model.trust_remote_code`` (verl's ``actor_rollout_ref.model.trust_remote_code``): a model folder
that brings its own code (``config.json`` ``auto_map``, a model type transformers does not know)
is refused before any work without it, and with it trains, rolls out and saves (the checkpoint
carries the code, so it loads again). The folder here is the tiny Qwen2 under a new model type,
its classes in the folder's own ``configuration_tiny.py`` / ``modeling_tiny.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlport.errors import ConfigError
from rlport.train.cli import build_config

CONFIGURATION = """from transformers import Qwen2Config


class TinyConfig(Qwen2Config):
    model_type = "rlport_tiny"
"""
MODELING = """from transformers import Qwen2ForCausalLM

from .configuration_tiny import TinyConfig


class TinyForCausalLM(Qwen2ForCausalLM):
    config_class = TinyConfig
"""


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("remote") / "model"
    build_tiny_model(folder, vocab=None, hidden_size=64, heads=2, kv_heads=1, layers=2, seed=0)
    (folder / "configuration_tiny.py").write_text(CONFIGURATION)
    (folder / "modeling_tiny.py").write_text(MODELING)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "rlport_tiny"
    config["architectures"] = ["TinyForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _cfg(model: Path, *extra: str) -> object:
    return build_config(
        [f"model.path={model}", "model.attn_implementation=sdpa", "actor.micro_batch_size=2", *extra],
        demo=False,
    )


def test_a_folder_with_its_own_code_is_refused_before_any_work_without_trust(remote: Path) -> None:
    from rlport.train.driver.preflight import check_remote_code

    with pytest.raises(ConfigError) as err:
        check_remote_code(remote, "model.path", trust=False)
    assert "'rlport_tiny' model whose code is in the folder itself" in err.value.message
    assert "AutoConfig, AutoModelForCausalLM" in err.value.message
    assert err.value.fix.startswith("rlport train model.trust_remote_code=true")
    check_remote_code(remote, "model.path", trust=True)


def test_with_trust_the_folders_own_classes_train_roll_out_and_save(remote: Path, tmp_path: Path) -> None:
    import rlport
    from rlport.rollout.hf_engine import HFEngine
    from rlport.rollout.protocol import EngineConfig, SamplingParams
    from rlport.train.data.batch import Sample
    from rlport.train.models.actor import Actor

    cfg = _cfg(remote, "model.trust_remote_code=true", "actor.lr=1e-3")
    actor = Actor(cfg, path=str(remote), device="cpu", rt=rlport.init())
    assert type(actor.module).__name__ == "TinyForCausalLM"
    samples = [Sample.scored([5, 6, 7], [8, 9], [0.0, 0.0], a) for a in (1.0, -1.0)]
    before = {k: v.clone() for k, v in actor.full_parameters()}
    actor.update(samples, actor.logprobs(samples))
    assert any(not torch.equal(v, before[k]) for k, v in actor.full_parameters())
    actor.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "modeling_tiny.py").is_file()  # the checkpoint loads again
    again = Actor(cfg, path=str(tmp_path / "ckpt"), device="cpu", rt=rlport.init())
    assert type(again.module).__name__ == "TinyForCausalLM"
    engine = HFEngine(EngineConfig(model=str(tmp_path / "ckpt"), trust_remote_code=True))
    assert type(engine.model).__name__ == "TinyForCausalLM"
    (out,) = engine.generate([[5, 6, 7]], SamplingParams(n=1, max_new_tokens=3, temperature=0.0))
    assert len(out[0].token_ids) == 3
    engine.shutdown()


def test_engines_pass_trust_remote_code_to_their_constructors() -> None:
    from rlport.rollout import sglang_engine, vllm_engine
    from rlport.rollout.adapter import engine_kwargs
    from rlport.rollout.protocol import EngineConfig

    config = EngineConfig(model="/m", trust_remote_code=True)
    for module, name in ((vllm_engine, "vllm"), (sglang_engine, "sglang")):
        kwargs = engine_kwargs(name, config, {}, names=module.CONFIG_NAMES, fixed=module.FIXED)
        assert kwargs["trust_remote_code"] is True, name


def test_verl_keys_set_trust_remote_code(remote: Path) -> None:
    cfg = build_config(
        [f"actor_rollout_ref.model.path={remote}", "actor_rollout_ref.model.trust_remote_code=True"],
        demo=False,
    )
    assert cfg.model.trust_remote_code is True
    cfg = build_config([f"model.path={remote}", "data.trust_remote_code=True"], demo=False)
    assert cfg.model.trust_remote_code is False  # the tokenizer follows the model's setting
