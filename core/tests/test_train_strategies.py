"""Training strategies (``actor.strategy``): FSDP2 and DDP over two gloo ranks compute what one
process computes on the same batch (the actor, and PPO's critic); the engine serves the trainer's weights after a sync; the demo
learns with each strategy; strategies a device cannot run are refused before any work.

The two-rank runs are real ``torch.distributed`` process groups (gloo, on CPU) started with
``torch.multiprocessing.spawn``; the single process runs ``replicated`` on the whole batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from rlport.errors import ConfigError
from rlport.train.actor import Actor, Sample
from rlport.train.cli import build_config
from rlport.train.critic import Critic
from rlport.train.trainer import Trainer

#: AdamW's first step moves every weight by about lr (m / sqrt(v) is about sign(g)), so weights are
#: compared as their update, relative to lr; losses as float32 sums of different partial orders.
LR = 1e-3
UPDATE_TOL = 1e-3  # max |update_2ranks - update_1process| / lr
LOSS_TOL = 1e-5


def _tiny(folder: Path) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    model = folder / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, vocab=None, hidden_size=64, heads=2, kv_heads=1, layers=2, seed=0)
    return model


def _samples() -> list[Sample]:
    """Eight rollouts of equal response length (so the token-mean over the batch equals the mean of
    the two halves' token-means), with advantages of both signs."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(8):
        prompt = torch.randint(3, 100, (5 + i % 3,), generator=g).tolist()
        response = torch.randint(3, 100, (6,), generator=g).tolist()
        returns = [float((i + k) % 3) - 1.0 for k in range(6)]  # the critic's targets
        out.append(Sample(prompt, response, [0.0] * 6, advantage=float(i % 4) - 1.5, returns=returns))
    return out


def _cfg(model: Path, strategy: str, workers: int, *extra: str) -> Any:
    return build_config(
        [
            *extra,
            f"model.path={model}",
            f"actor.strategy={strategy}",
            f"trainer.workers={workers}",
            f"actor.lr={LR}",
            "actor.micro_batch_size=2",  # two micro-batches per rank: accumulation is exercised
            "actor.grad_clip=0.5",  # clipping on (sharded) gradients is exercised
            f"critic.lr={LR}",
            "critic.micro_batch_size=2",
            "model.attn_implementation=sdpa",
        ],
        demo=False,
    )


def _digest(named: Any) -> str:
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _train(model: Path, strategy: str, rank: int, world: int, out: Path) -> None:
    import rlport

    rt = rlport.init()
    samples = _samples()
    share = samples[rank * len(samples) // world : (rank + 1) * len(samples) // world]
    actor = Actor(_cfg(model, strategy, world), path=str(model), device="cpu", rank=rank, world=world, rt=rt)
    stats = actor.update(share, actor.logprobs(share))
    weights = {name: t.clone() for name, t in actor.full_parameters()}

    def local(t: torch.Tensor) -> int:
        return (t.to_local() if hasattr(t, "to_local") else t).numel()

    # the share of the model this rank holds: parameters and AdamW state (exp_avg, exp_avg_sq)
    held = sum(local(p) for p in actor.model.parameters()) + sum(
        local(v) for st in actor.optimizer.state.values() for v in st.values() if v.dim() > 0
    )
    share_held = held / (3 * sum(t.numel() for t in weights.values()))
    # the critic on the same strategy: its new value head is drawn alike on every rank
    torch.manual_seed(0)
    critic = Critic(actor.cfg, device="cpu", rank=rank, world=world, rt=rt)
    critic_start = {name: t.clone() for name, t in critic.full_parameters()}
    stats.update(critic.update(share, critic.values(share)))
    critic_weights = {name: t.clone() for name, t in critic.full_parameters()}
    if rank == 0:
        torch.save(
            {
                "stats": stats,
                "weights": weights,
                "optimizer": actor.optimizer_name,
                "held": share_held,
                "critic_start": critic_start,
                "critic": critic_weights,
            },
            out,
        )


def _rank(rank: int, model: Path, strategy: str, store: str, out: Path) -> None:
    import torch.distributed as dist

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _train(model, strategy, rank, 2, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def single(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("single") / "r.pt"
    _train(model, "replicated", 0, 1, out)
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("strategy", ["fsdp", "ddp", "replicated"])
def test_two_ranks_match_one_process(
    strategy: str, model: Path, single: dict[str, Any], tmp_path: Path
) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "r.pt"
    mp.spawn(_rank, args=(model, strategy, str(tmp_path / "store"), out), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    from safetensors.torch import load_file

    before = load_file(model / "model.safetensors")
    assert two["weights"].keys() == single["weights"].keys()
    moved = 0.0
    for name, w in single["weights"].items():
        start = before[name]
        delta_1, delta_2 = w - start, two["weights"][name] - start
        moved = max(moved, float(delta_1.abs().max()))
        err = float((delta_2 - delta_1).abs().max()) / LR
        assert err <= UPDATE_TOL, f"{strategy}: {name} update differs by {err:.2e} x lr"
    assert moved > LR / 2, "the update did not move the weights"
    # each rank's loss is a token-mean over half the batch; their mean is the whole batch's
    s1, s2 = single["stats"], two["stats"]
    assert abs(s2["actor/grad_norm"] - s1["actor/grad_norm"]) <= 1e-4 * s1["actor/grad_norm"]
    assert s1["actor/grad_norm"] > 0.5  # clipping took effect (grad_clip=0.5)
    # parameters + AdamW state per rank: 1/2 of a replica under fsdp (tied or uneven shards aside)
    assert two["held"] == pytest.approx(0.5 if strategy == "fsdp" else 1.0, abs=0.02)
    # the critic (PPO's value model) on the same strategy: the same start and the same update
    assert two["critic"].keys() == single["critic"].keys() and "score.weight" in two["critic"]
    for name, start in single["critic_start"].items():
        assert torch.equal(two["critic_start"][name], start), name
        err = float((two["critic"][name] - single["critic"][name]).abs().max()) / LR
        assert err <= UPDATE_TOL, f"{strategy}: critic {name} update differs by {err:.2e} x lr"
    head_moved = float(
        (single["critic"]["score.weight"] - single["critic_start"]["score.weight"]).abs().max()
    )
    assert head_moved > LR / 2, "the critic's update did not move its head"
    assert abs(s2["critic/grad_norm"] - s1["critic/grad_norm"]) <= 1e-4 * s1["critic/grad_norm"]


def _engine_rank(rank: int, model: Path, store: str, out: Path) -> None:
    import torch.distributed as dist

    from rlport.train.workers import Worker

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        w = Worker(_cfg(model, "fsdp", 2), rank=rank, world=2, actor_path=str(model))
        w.build()
        share = _samples()[rank * 4 : (rank + 1) * 4]
        w.train(share)
        trainer = _digest(w.actor.full_parameters())
        state = w.engine.model.state_dict()
        served = _digest((name, state[name]) for name, _ in w.actor.full_parameters())
        start = _digest(
            (n, t)
            for n, t in __import__("safetensors.torch").torch.load_file(model / "model.safetensors").items()
            if n in state
        )
        (out / f"rank{rank}.json").write_text(
            json.dumps({"trainer": trainer, "served": served, "start": start})
        )
        w.shutdown()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_engine_serves_the_trainers_weights_after_a_fsdp_sync(model: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_engine_rank, args=(model, str(tmp_path / "store"), tmp_path), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["served"] == r["trainer"]
        assert r["served"] != r["start"]  # the update changed the weights, and the engine has them
    assert ranks[0]["trainer"] == ranks[1]["trainer"]  # every rank's engine gets the same weights


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_demo_reward_rises_with_two_workers(
    strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = build_config(
        [
            "trainer.progress=false",
            "trainer.workers=2",
            "trainer.ray_num_cpus=2",
            f"actor.strategy={strategy}",
            "trainer.steps=20",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    res = Trainer(cfg, console=_console()).fit()
    assert {w["strategy"] for w in res.workers} == {strategy}
    rewards = [h["reward/mean"] for h in res.history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3  # measured: 0.015 -> 0.21 by step 14
    assert last - first >= 0.15, f"{strategy}: reward went from {first:.3f} to {last:.3f}"
    assert all(h["workers/weights_in_sync"] == 1.0 for h in res.history)
    assert (tmp_path / "run" / "checkpoints" / "step_20" / "model.safetensors").is_file()


def test_megatron_is_refused_on_cpu_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.train import workers

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker started before the strategy was checked")

    monkeypatch.setattr(workers.Worker, "__init__", refuse)
    cfg = build_config(
        ["actor.strategy=megatron", "trainer.workers=2", f"trainer.output_dir={tmp_path / 'run'}"], demo=True
    )
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, console=_console())
    assert "actor.strategy=megatron cannot run on this device (cpu" in err.value.message
    assert "said by plugin 'reference'" in err.value.message
    assert err.value.fix.startswith("rlport train actor.strategy=replicated")


@pytest.mark.parametrize(
    ("extra", "message", "fix"),
    [
        (["actor.strategy=zero3"], "'actor.strategy' is 'zero3'", "actor.strategy=fsdp"),
        (["actor.strategy=fsdp", "trainer.workers=1"], "trainer.workers=1", "trainer.workers=2"),
        (
            ["actor.strategy=fsdp", "trainer.workers=2", "actor.offload=true"],
            "actor.offload=true",
            "actor.fsdp_config.param_offload=true",
        ),
        (
            ["actor.strategy=fsdp", "trainer.workers=2", "actor.fsdp_config.param_offload=true"],
            "already is the host (cpu)",
            "actor.fsdp_config.param_offload=false",
        ),
    ],
)
def test_bad_strategy_settings_fail_before_work(
    extra: list[str], message: str, fix: str, tmp_path: Path
) -> None:
    cfg = build_config([*extra, f"trainer.output_dir={tmp_path / 'run'}"], demo=True)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, console=_console())
    assert message in err.value.message and fix in err.value.fix


def test_reference_optimizer_is_adamw_on_its_fastest_path() -> None:
    """On the host the reference keeps AdamW's foreach path (the fused host kernel changes the
    seeded demo's outcome); on an accelerator with a fused kernel it is fused."""
    import rlport
    from rlport.train.device_parts import optimizer_factory
    from rlport.train.optim import AdamWFactory, has_fused_adamw

    factory, plugin = optimizer_factory("adamw", "replicated", rlport.init())
    assert plugin == "reference"
    p = torch.nn.Parameter(torch.ones(3))
    opt = factory([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
    assert isinstance(opt, torch.optim.AdamW)
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True
    assert has_fused_adamw("cpu") and not AdamWFactory("cpu").fused  # torch 2.13 has the host kernel
    assert "foreach" in repr(factory)


def test_token_budget_micro_batches_by_hand() -> None:
    from rlport.train.batching import token_budget_chunks

    # budget 12: [5, 6] pads to 2 x 6 = 12; adding 7 would be 3 x 7 = 21; [7] then [3] gives 2 x 7 = 14
    assert token_budget_chunks([5, 6, 7, 3, 2, 2], 12) == [[0, 1], [2], [3, 4, 5]]
    assert token_budget_chunks([20, 1], 12) == [[0], [1]]  # longer than the budget: alone
    assert token_budget_chunks([], 12) == []


@pytest.mark.parametrize(
    "extra",
    [
        (
            "actor.use_dynamic_bsz=true",
            "actor.ppo_max_token_len_per_gpu=40",
            "data.max_prompt_length=7",
            "rollout.max_new_tokens=6",
        ),
        ("actor.gradient_checkpointing=true",),
    ],
)
def test_dynamic_batches_and_checkpointing_keep_the_update(
    extra: tuple[str, ...], model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Micro-batches by token budget (here 40 tokens: 3 of the 11 to 13 token rollouts, not
    actor.micro_batch_size=2) and gradient checkpointing change how the gradients are computed,
    not the update: the weights after one update equal those of the plain run."""
    import rlport

    rt = rlport.init()
    calls: list[int] = []
    original = Actor._micro_step

    def counted(self: Actor, chunk: list[Sample], *args: Any) -> Any:
        calls.append(len(chunk))
        return original(self, chunk, *args)

    monkeypatch.setattr(Actor, "_micro_step", counted)
    runs = {}
    for name, overrides in (("plain", ()), ("changed", extra)):
        calls.clear()
        actor = Actor(_cfg(model, "replicated", 1, *overrides), path=str(model), device="cpu", rt=rt)
        samples = _samples()
        actor.update(samples, actor.logprobs(samples))
        runs[name] = ({n: t.clone() for n, t in actor.full_parameters()}, list(calls), actor)
    plain, changed = runs["plain"], runs["changed"]
    assert plain[1] == [2, 2, 2, 2]
    if "actor.use_dynamic_bsz=true" in extra:
        assert changed[1] == [3, 3, 2], changed[1]  # 3 x 13 <= 40 tokens
    else:
        assert changed[2].module.is_gradient_checkpointing and not plain[2].module.is_gradient_checkpointing
    for n, w in plain[0].items():
        assert torch.allclose(changed[0][n], w, atol=LR * UPDATE_TOL), n


def test_offload_asks_for_what_fsdp2_does() -> None:
    """SECTION.fsdp_config.optimizer_offload moves the optimizer state with the parameters only
    (FSDP2's CPUOffloadPolicy): alone it is an error naming the fix off the host, and satisfied on
    it; param_offload on the host is an error naming the section."""
    from rlport.train.config import FsdpConfig
    from rlport.train.validate import check_offload

    with pytest.raises(ConfigError) as err:
        check_offload("critic", FsdpConfig(optimizer_offload=True), "cuda")
    assert (
        "critic.fsdp_config.optimizer_offload=true without critic.fsdp_config.param_offload"
        in err.value.message
    )
    assert err.value.fix == (
        "rlport train critic.fsdp_config.param_offload=true (or critic.fsdp_config.optimizer_offload=false)"
    )
    check_offload("critic", FsdpConfig(optimizer_offload=True, param_offload=True), "cuda")
    check_offload("actor", FsdpConfig(optimizer_offload=True), "cpu")  # the state already is on the host
    with pytest.raises(ConfigError, match=r"critic\.fsdp_config\.param_offload=true moves parameters"):
        check_offload("critic", FsdpConfig(param_offload=True), "cpu")


def test_the_actor_and_the_critic_each_take_their_fsdp_config(
    model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlport
    from rlport.train import trained

    seen: dict[str, Any] = {}
    real = trained.build

    def recording(name: str, **kwargs: Any) -> Any:
        seen[kwargs["fsdp"].reduce_dtype] = kwargs["fsdp"]
        return real(name, **kwargs)

    monkeypatch.setattr(trained, "build", recording)
    cfg = _cfg(
        model,
        "replicated",
        1,
        "actor.fsdp_config.reduce_dtype=float16",
        "critic.fsdp_config.reduce_dtype=bfloat16",
    )
    rt = rlport.init()
    Actor(cfg, path=str(model), device="cpu", rt=rt)
    Critic(cfg, device="cpu", rt=rt)
    assert seen == {"float16": cfg.actor.fsdp_config, "bfloat16": cfg.critic.fsdp_config}
