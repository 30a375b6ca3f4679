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
from demo_runs import spawn_ranks
from rich.console import Console

from rlport.errors import ConfigError
from rlport.train.cli import build_config
from rlport.train.data.batch import Sample
from rlport.train.driver.trainer import Trainer
from rlport.train.models.actor import Actor
from rlport.train.models.critic import Critic

#: AdamW's first step moves every weight by about lr (m / sqrt(v) is about sign(g)): the runs are
#: compared by the gradients they step with, within float64_tolerance.
LR = 1e-3


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
        out.append(Sample.scored(prompt, response, [0.0] * 6, float(i % 4) - 1.5, returns=returns))
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


def _train(
    model: Path, strategy: str, rank: int, world: int, out: Path, dtype: torch.dtype = torch.float32
) -> None:
    import rlport

    rt = rlport.init()
    samples = _samples()
    share = samples[rank * len(samples) // world : (rank + 1) * len(samples) // world]
    actor = Actor(_cfg(model, strategy, world), path=str(model), device="cpu", rank=rank, world=world, rt=rt)
    actor.module.to(dtype)
    grads = _record_first_step(actor)
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
    critic.module.to(dtype)
    critic_start = {name: t.clone() for name, t in critic.full_parameters()}
    critic_grads = _record_first_step(critic)
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
                "grads": grads,
                "critic_grads": critic_grads,
            },
            out,
        )


def _record_first_step(trained: Any) -> dict[str, torch.Tensor]:
    """Filled, at ``trained``'s first optimizer step, with the whole gradient (after clipping and
    the ranks' reduction; gathered where sharded) of each parameter, in float64."""
    grads: dict[str, torch.Tensor] = {}
    named = dict(trained.module.named_parameters())

    def record(optimizer: Any, args: Any, kwargs: Any) -> None:
        if grads:
            return
        for n, p in named.items():
            g = p.grad
            if g is not None:
                g = g.full_tensor() if hasattr(g, "full_tensor") else g  # every rank gathers
                grads[n] = g.detach().double().clone()

    trained.optimizer.register_step_pre_hook(record)
    return grads


def _rank(rank: int, model: Path, strategy: str, store: str, out: Path) -> None:
    import torch.distributed as dist

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _train(model, strategy, rank, 2, out)
        dist.barrier()  # no rank leaves while FSDP's last collectives run on the other (a gloo abort)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def single(model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process on the whole batch, in float32, and the same in float64 (``"exact"``): the
    reference and the float32 computation's own error, from which tolerances are derived."""
    folder = tmp_path_factory.mktemp("single")
    _train(model, "replicated", 0, 1, folder / "r.pt")
    _train(model, "replicated", 0, 1, folder / "r64.pt", dtype=torch.float64)
    return {
        **torch.load(folder / "r.pt", weights_only=False),
        "exact": torch.load(folder / "r64.pt", weights_only=False),
    }


@pytest.mark.parametrize("strategy", ["fsdp", "ddp", "replicated"])
def test_two_ranks_match_one_process(
    strategy: str, model: Path, single: dict[str, Any], tmp_path: Path
) -> None:

    out = tmp_path / "r.pt"
    spawn_ranks(_rank, (model, strategy, str(tmp_path / "store"), out))
    two = torch.load(out, weights_only=False)
    from safetensors.torch import load_file

    before = load_file(model / "model.safetensors")
    assert two["weights"].keys() == single["weights"].keys()
    # the same gradients step the optimizer (AdamW's first step is about lr x sign(g), so weights
    # would compare a gradient within rounding of zero as a 2 lr difference): within the float32
    # computation's own error against float64 (float64_tolerance)
    exact = single["exact"]
    assert two["grads"].keys() == exact["grads"].keys() and two["grads"]
    for name, g in exact["grads"].items():
        tol = float64_tolerance(single["grads"][name], g)
        err = float((two["grads"][name] - g).abs().max())
        assert err <= tol, (
            f"{strategy}: {name} gradient off float64 by {err:.2e}, one process by {tol / 4:.2e}"
        )
    moved = max(float((w - before[n]).abs().max()) for n, w in two["weights"].items())
    assert moved > LR / 2, "the update did not move the weights"
    # each rank's loss is a token-mean over half the batch; their mean is the whole batch's
    s1, s2 = single["stats"], two["stats"]
    e1 = exact["stats"]
    norm_tol = float64_tolerance(torch.tensor(s1["actor/grad_norm"]), torch.tensor(e1["actor/grad_norm"]))
    assert abs(s2["actor/grad_norm"] - e1["actor/grad_norm"]) <= norm_tol
    assert s1["actor/grad_norm"] > 0.5  # clipping took effect (grad_clip=0.5)
    # parameters + AdamW state per rank: 1/2 of a replica under fsdp (tied or uneven shards aside)
    assert two["held"] == pytest.approx(0.5 if strategy == "fsdp" else 1.0, abs=0.02)
    # the critic (PPO's value model) on the same strategy: the same start and the same gradients
    assert two["critic"].keys() == single["critic"].keys() and "score.weight" in two["critic"]
    for name, start in single["critic_start"].items():
        assert torch.equal(two["critic_start"][name], start), name
    assert two["critic_grads"].keys() == exact["critic_grads"].keys() and two["critic_grads"]
    for name, g in exact["critic_grads"].items():
        tol = float64_tolerance(single["critic_grads"][name], g)
        err = float((two["critic_grads"][name] - g).abs().max())
        assert err <= tol, (
            f"{strategy}: critic {name} gradient off float64 by {err:.2e} (tolerance {tol:.2e})"
        )
    head_moved = float((two["critic"]["score.weight"] - single["critic_start"]["score.weight"]).abs().max())
    assert head_moved > LR / 2, "the critic's update did not move its head"


def _engine_rank(rank: int, model: Path, store: str, out: Path) -> None:
    import torch.distributed as dist

    from rlport.train.workers.worker import Worker

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        w = Worker(_cfg(model, "fsdp", 2), rank=rank, world=2, actor_path=str(model))
        w.build()
        share = _samples()[rank * 4 : (rank + 1) * 4]
        w.prepare(share)  # the step's phases: prepare, then train on the advantages
        w.train([s.advantages for s in share], [s.returns for s in share])
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

    spawn_ranks(_engine_rank, (model, str(tmp_path / "store"), tmp_path))
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


def test_replicated_critics_start_and_stay_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PPO on two replicated workers: every rank draws the critic's new value head alike (once
    each rank drew its own from seed + rank and trained a different critic to the end)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = build_config(
        [
            "trainer.progress=false",
            "trainer.workers=2",
            "trainer.ray_num_cpus=2",
            "actor.strategy=replicated",
            "algorithm.adv_estimator=gae",
            "trainer.steps=2",
            "data.train_batch_size=4",
            "rollout.n=2",
            "rollout.max_new_tokens=4",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    res = Trainer(cfg, console=_console()).fit()
    assert [h["workers/weights_in_sync"] for h in res.history] == [1.0, 1.0]


def test_workers_that_drift_apart_are_named_by_their_first_differing_weight() -> None:
    from rlport.train.workers.group import first_drift

    same = {"actor/a": 1.0, "actor/b": -2.5, "critic/score.weight": 3.0}
    assert first_drift([same, dict(same)]) == ""
    assert first_drift([same, {**same, "actor/b": -2.5 * (1 + 1e-9)}]) == ""  # summation order
    drifted = {**same, "critic/score.weight": 3.5}
    assert first_drift([same, drifted]) == "critic/score.weight (sum of its elements: rank 0: 3, rank 1: 3.5)"
    assert first_drift([same, {"actor/a": 1.0}]).startswith("actor/b")  # a weight one rank lacks


def test_megatron_is_refused_on_cpu_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.train.workers import worker as workers

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
    from rlport.optim import AdamWFactory, has_fused_adamw

    factory, plugin = rlport.init().optimizer_factory("adamw", "replicated")
    assert plugin == "reference"
    p = torch.nn.Parameter(torch.ones(3))
    opt = factory([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
    assert isinstance(opt, torch.optim.AdamW)
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True
    assert has_fused_adamw("cpu") and not AdamWFactory("cpu").fused  # torch 2.13 has the host kernel
    assert "foreach" in repr(factory)


def test_token_budget_micro_batches_by_hand() -> None:
    from rlport.train.models.micro_batches import token_budget_chunks

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
    not the update: the gradients the optimizer steps with equal the plain run's.

    Compared as gradients, not as updated weights: AdamW's first step moves a weight by about
    lr x sign(g), so a gradient within rounding of zero can flip its update by 2 lr on one CPU's
    kernels and not on another's. The tolerance is the computation's own error: the plain float32
    run's distance from the same run in float64 (:func:`float64_tolerance`)."""
    import rlport

    rt = rlport.init()
    calls: list[int] = []
    original = Actor._micro_step

    def counted(self: Actor, chunk: list[Sample], *args: Any) -> Any:
        calls.append(len(chunk))
        return original(self, chunk, *args)

    monkeypatch.setattr(Actor, "_micro_step", counted)
    runs = {}
    for name, overrides, dtype in (
        ("plain", (), torch.float32),
        ("reference", (), torch.float64),
        ("changed", extra, torch.float32),
    ):
        calls.clear()
        actor = Actor(_cfg(model, "replicated", 1, *overrides), path=str(model), device="cpu", rt=rt)
        actor.module.to(dtype)
        runs[name] = (_first_step_gradients(actor), list(calls), actor)
    plain, reference, changed = runs["plain"], runs["reference"], runs["changed"]
    assert plain[1] == [2, 2, 2, 2]
    if "actor.use_dynamic_bsz=true" in extra:
        assert changed[1] == [3, 3, 2], changed[1]  # 3 x 13 <= 40 tokens
    else:
        # transformers 5.25 renames is_gradient_checkpointing (deprecated) to is_activation_checkpointing
        flag = "is_activation_checkpointing"
        if not hasattr(plain[2].module, flag):
            flag = "is_gradient_checkpointing"
        assert getattr(changed[2].module, flag) and not getattr(plain[2].module, flag)
    for n, exact in reference[0].items():
        tol = float64_tolerance(plain[0][n], exact)
        err = (changed[0][n].double() - exact).abs().max().item()
        assert err <= tol, f"{n}: gradient differs from float64 by {err:.2e}, the plain run by {tol / 4:.2e}"


def _first_step_gradients(actor: Actor) -> dict[str, torch.Tensor]:
    """The gradients (after clipping) the actor's first optimizer step on :func:`_samples` uses."""
    grads: list[dict[str, torch.Tensor]] = []
    named = dict(actor.module.named_parameters())

    def record(optimizer: Any, args: Any, kwargs: Any) -> None:
        if not grads:
            grads.append(
                {n: p.grad.detach().double().clone() for n, p in named.items() if p.grad is not None}
            )

    actor.optimizer.register_step_pre_hook(record)
    samples = _samples()
    actor.update(samples, actor.logprobs(samples))
    assert grads and grads[0], "the optimizer never stepped"
    return grads[0]


def float64_tolerance(float32: torch.Tensor, exact: torch.Tensor) -> float:
    """How far a float32 computation of ``exact`` may land from it: 4x the distance of one float32
    computation of it (another summation order may err that much again, and more), plus 16 units
    of float32 rounding at the tensor's scale, for a result that came out exact by chance."""
    own = (float32.double() - exact).abs().max().item()
    return 4 * own + 16 * torch.finfo(torch.float32).eps * exact.abs().max().item()


def test_offload_asks_for_what_fsdp2_does() -> None:
    """SECTION.fsdp_config.optimizer_offload moves the optimizer state with the parameters only
    (FSDP2's CPUOffloadPolicy): alone it is an error naming the fix off the host, and satisfied on
    it; param_offload on the host is an error naming the section."""
    from rlport.train.config.schema import FsdpConfig
    from rlport.train.driver.preflight import check_offload

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
    from rlport.train.models import trained

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
