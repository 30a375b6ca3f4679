"""LoRA on the actor (``model.lora_rank``, verl's ``actor_rollout_ref.model.lora_rank``).

peft is the oracle: the weights rlport streams to the engine and saves equal peft's own
``merge_and_unload``. Only the adapters train; the reference is the actor with its adapters off
(equal to the base model's log-probabilities); two gloo ranks with FSDP2 or DDP update as one
process does; a checkpoint holds the merged model and the adapters, and resuming continues from
the adapters on the base (not from the merged weights, which would count the adapters twice).
"""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("peft")

from demo_runs import metrics, run_demo, spawn_ranks
from rich.console import Console

from rlport.errors import ConfigError
from rlport.train.checkpoint import ADAPTER_DIR
from rlport.train.cli import build_config
from rlport.train.data.batch import Sample
from rlport.train.models.actor import Actor
from rlport.train.models.lora import add_adapters, merged_weights, scalings

LR = 1e-2
LORA = ["model.lora_rank=4", "model.lora_alpha=8"]


def _tiny(folder: Path) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    model = folder / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, vocab=None, hidden_size=64, heads=2, kv_heads=1, layers=2, seed=0)
    return model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny"))


def _cfg(model: Path, *extra: str, strategy: str = "replicated", workers: int = 1) -> Any:
    return build_config(
        [
            *LORA,
            f"model.path={model}",
            f"actor.strategy={strategy}",
            f"trainer.workers={workers}",
            f"actor.lr={LR}",
            "actor.micro_batch_size=2",
            "model.attn_implementation=sdpa",
            *extra,
        ],
        demo=False,
    )


def _samples() -> list[Sample]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(8):
        prompt = torch.randint(3, 100, (5 + i % 3,), generator=g).tolist()
        response = torch.randint(3, 100, (6,), generator=g).tolist()
        out.append(Sample.scored(prompt, response, [0.0] * 6, float(i % 4) - 1.5))
    return out


def _actor(cfg: Any, path: Path, **kwargs: Any) -> Actor:
    import rlport

    return Actor(cfg, path=str(path), device="cpu", rt=rlport.init(), **kwargs)


def _base_weights(model: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model / "model.safetensors")


def test_merged_weights_equal_peft_merge_and_unload(model: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = _cfg(model)
    peft_model = add_adapters(AutoModelForCausalLM.from_pretrained(model), cfg.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B starts at zero: draw it, so the merge is not the base
        for name, p in peft_model.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    merged = dict(merged_weights(peft_model.named_parameters(), scalings(peft_model)))
    oracle = dict(copy.deepcopy(peft_model).merge_and_unload().named_parameters())
    assert (
        merged.keys()
        == oracle.keys()
        == dict(AutoModelForCausalLM.from_pretrained(model).named_parameters()).keys()
    )
    base = _base_weights(model)
    moved = [k for k in merged if not torch.equal(merged[k], base[k])]
    assert moved and all(k.endswith("_proj.weight") for k in moved)  # every linear layer, nothing else
    for k, w in oracle.items():
        torch.testing.assert_close(merged[k], w.detach(), rtol=0, atol=1e-6, msg=k)


def test_only_the_adapters_train_and_the_reference_is_the_base(model: Path) -> None:
    from transformers import AutoModelForCausalLM

    from rlport.train.algos.grpo import token_logprobs

    actor = _actor(_cfg(model, "algorithm.use_kl_loss=true"), model)
    assert actor.reference is None  # no second copy: the base is the actor with its adapters off
    optimized = {id(p) for group in actor.optimizer.param_groups for p in group["params"]}
    names = [n for n, p in actor.module.named_parameters() if id(p) in optimized]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert actor.lora_text().startswith("lora=r4 (")
    samples = _samples()
    before = {k: v.clone() for k, v in actor.full_parameters()}
    actor.update(samples, actor.logprobs(samples))
    after = dict(actor.full_parameters())
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed and all(k.endswith("_proj.weight") for k in changed)
    lp = actor.logprobs(samples)
    base = AutoModelForCausalLM.from_pretrained(model, attn_implementation="sdpa").eval()
    with torch.no_grad():
        logits, tokens, _ = actor._response_outputs(base, samples)
    base_lp = token_logprobs(logits, tokens)
    for i, s in enumerate(samples):
        n = len(s.response_ids)
        torch.testing.assert_close(lp.ref[i], base_lp[i, :n], rtol=0, atol=1e-5)
        assert not torch.allclose(lp.old[i], lp.ref[i], atol=1e-4)  # the trained actor has moved


def _rank(rank: int, model: Path, strategy: str, store: str, out: Path, extra: tuple[str, ...] = ()) -> None:
    import torch.distributed as dist

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        import rlport

        samples = _samples()
        share = samples[rank * 4 : (rank + 1) * 4]
        cfg = _cfg(model, *extra, strategy=strategy, workers=2)
        actor = Actor(cfg, path=str(model), device="cpu", rank=rank, world=2, rt=rlport.init())
        actor.update(share, actor.logprobs(share))
        weights = {k: v.clone() for k, v in actor.full_parameters()}
        if rank == 0:
            torch.save(weights, out)
        dist.barrier()  # no rank leaves while FSDP's last collectives run on the other (a gloo abort)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_two_ranks_update_the_adapters_as_one_process(strategy: str, model: Path, tmp_path: Path) -> None:

    single = _actor(_cfg(model), model)
    samples = _samples()
    single.update(samples, single.logprobs(samples))
    one = dict(single.full_parameters())
    out = tmp_path / "two.pt"
    spawn_ranks(_rank, (model, strategy, str(tmp_path / "store"), out))
    two = torch.load(out, weights_only=True)
    base = _base_weights(model)
    assert two.keys() == one.keys()
    for k, w in one.items():  # compared as updates, relative to the learning rate
        assert float((two[k] - base[k] - (w - base[k])).abs().max()) / LR < 1e-3, k


def test_fsdp_in_bfloat16_trains_adapters_whose_first_forward_had_them_off(
    model: Path, tmp_path: Path
) -> None:
    """In bypass mode with the KL loss, the first forward of a LoRA actor is the reference's, with
    its adapters off, which peft marks frozen meanwhile. FSDP2 chose the gradients' dtype from the
    parameters that required grad at that first forward (none), so the bfloat16 gradients were
    never cast back to the float32 adapters and the update failed on both ranks (the wide settings
    sweep's row 18)."""
    out = tmp_path / "two.pt"
    extra = (
        "actor.fsdp_config.param_dtype=bfloat16",
        "actor.fsdp_config.reduce_dtype=",
        "algorithm.use_kl_loss=true",
        "algorithm.rollout_correction.bypass_mode=true",
        "algorithm.rollout_correction.rollout_is=token",
    )
    spawn_ranks(_rank, (model, "fsdp", str(tmp_path / "store"), out, extra))
    two = torch.load(out, weights_only=True)
    base = _base_weights(model)
    moved = [k for k in two if k in base and not torch.equal(two[k], base[k])]
    assert moved and all(torch.isfinite(two[k]).all() for k in two), moved


def test_a_checkpoint_holds_the_merged_model_and_the_adapters_and_resumes(tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    res = run_demo(out, *LORA, "actor.lr=1e-3", "trainer.steps=2")
    ckpt = out / "checkpoints" / "step_2"
    assert (ckpt / ADAPTER_DIR / "adapter_config.json").is_file()
    assert json.loads((ckpt / ADAPTER_DIR / "adapter_config.json").read_text())["r"] == 4
    base = out / "model"  # the demo's model folder
    saved = load_file(ckpt / "model.safetensors")
    oracle = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), ckpt / ADAPTER_DIR)
    oracle_weights = oracle.merge_and_unload().state_dict()
    moved = 0
    for k, w in saved.items():
        torch.testing.assert_close(w, oracle_weights[k], rtol=0, atol=1e-6, msg=k)
        moved += not torch.equal(w, _base_weights(base)[k])
    assert moved  # the adapters trained, and the saved model has them merged in
    # resuming builds the actor from the base and the checkpoint's adapters: its weights are the saved ones
    cfg = build_config([f"model.path={base}", *LORA, "model.attn_implementation=sdpa"], demo=False)
    resumed = _actor(cfg, ckpt, resume_from=str(ckpt))
    for k, w in resumed.full_parameters():
        torch.testing.assert_close(w, saved[k], rtol=0, atol=1e-6, msg=k)
    res = run_demo(out, *LORA, "actor.lr=1e-3", "trainer.steps=3", "trainer.resume_from=latest")
    rows = metrics(res)
    assert [r["step"] for r in rows][-1] == 3
    assert rows[-1]["rollout/logprob_mismatch"] < 1e-4  # the engine serves the actor's merged weights


def test_lora_adapter_path_starts_from_saved_adapters(model: Path, tmp_path: Path) -> None:
    trained = _actor(_cfg(model), model)
    samples = _samples()
    trained.update(samples, trained.logprobs(samples))
    trained.save(tmp_path / "ckpt")
    adapter = tmp_path / "ckpt" / ADAPTER_DIR
    again = _actor(_cfg(model, f"model.lora_adapter_path={adapter}"), model)
    want = dict(trained.full_parameters())
    for k, w in again.full_parameters():
        torch.testing.assert_close(w, want[k], rtol=0, atol=1e-6, msg=k)


def test_verl_lora_keys_map_onto_the_model_section(model: Path) -> None:
    cfg = build_config(
        [
            f"actor_rollout_ref.model.path={model}",
            "actor_rollout_ref.model.lora_rank=8",
            "actor_rollout_ref.model.lora_alpha=32",
            "actor_rollout_ref.model.target_modules=all-linear",
            "actor_rollout_ref.model.exclude_modules=null",
            "actor_rollout_ref.rollout.layered_summon=True",
        ],
        demo=False,
    )
    m = cfg.model
    assert (m.lora_rank, m.lora_alpha, m.target_modules, m.exclude_modules) == (8, 32.0, ["all-linear"], [])
    cfg = build_config(
        [f"model.path={model}", "actor_rollout_ref.model.target_modules=[q_proj,v_proj]"], demo=False
    )
    assert cfg.model.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError) as err:
        build_config([f"model.path={model}", "critic.model.lora_rank=8"], demo=False)
    assert "model.lora_rank" in err.value.message


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["model.lora_rank=0", "model.lora_adapter_path=/some/adapter"], "model.lora_rank=0"),
        (["actor.strategy=megatron"], "actor.strategy=megatron"),
        (["model.lora_adapter_path=/no/such/adapter"], "adapter_config.json"),
    ],
)
def test_lora_settings_that_cannot_work_are_refused_before_any_work(
    model: Path, extra: list[str], said: str
) -> None:
    from rlport.train.driver.preflight import check_lora

    with pytest.raises(ConfigError) as err:
        check_lora(_cfg(model, *extra))
    assert said in err.value.message
    assert "model.lora" in err.value.fix or "actor.strategy=" in err.value.fix


def test_lora_without_peft_names_the_extra(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from rlport.extras import MissingExtra
    from rlport.train.driver.preflight import check_lora

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtra) as err:
        check_lora(_cfg(model))
    assert err.value.extra == "lora" and err.value.fix == 'pip install "rlport[lora]"'


def test_a_target_module_the_model_lacks_is_a_config_error(model: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _actor(_cfg(model, "model.target_modules=[no_such_proj]"), model)
    assert "model.target_modules=['no_such_proj']" in err.value.message


@pytest.mark.parametrize("workers", [1, 2])
def test_a_target_module_the_model_lacks_is_refused_before_any_worker(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-flight checks add the adapters to the model's structure (meta device): a name the
    model lacks is refused before a worker (or Ray) starts, not when peft builds the adapters."""
    from rlport.train.driver.trainer import Trainer
    from rlport.train.workers import worker as worker_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker started before the input was validated")

    monkeypatch.setattr(worker_module.Worker, "__init__", refuse)
    cfg = build_config(
        [
            "trainer.progress=false",
            "model.lora_rank=4",
            "model.target_modules=[q_proj,no_such_proj]",
            f"trainer.workers={workers}",
            f"trainer.output_dir={tmp_path}",
        ],
        demo=True,
    )
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, console=Console(file=io.StringIO()))
    assert "no_such_proj" in err.value.message and "all-linear" in err.value.fix
