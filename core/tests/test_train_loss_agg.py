"""``algorithm.loss_agg_mode`` / ``critic.loss_agg_mode`` and dual-clip PPO
(``algorithm.clip_ratio_c``): the micro-batch shares add up to verl's own ``agg_loss`` of the whole
mini-batch however it is cut, also when the mini-batch is spread over data-parallel ranks holding
different numbers of tokens and sequences (verl's ``dp_size``, ``batch_num_tokens``,
``global_batch_size``), the clipped loss equals verl's ``compute_policy_loss_vanilla``, and an actor
update depends neither on the micro-batch size nor on how many ranks (ddp or fsdp over real gloo
processes) share the mini-batch, in any mode."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from demo_runs import spawn_ranks
from verl_source import VerlActorConfig, verl_core_algos

from rlport.train.algos.loss_agg import MiniBatchSize, micro_share
from rlport.train.algos.policy_losses import clipped_policy_loss
from rlport.train.cli import build_config
from rlport.train.config.choices import LOSS_AGG_MODES
from rlport.train.config.schema import AlgorithmConfig
from rlport.train.data.batch import Sample

LENGTHS = [5, 1, 7, 0, 3, 7]  # a sequence without response tokens among them
NORM = 9.0


def _verl() -> SimpleNamespace:
    """verl's agg_loss and compute_policy_loss_vanilla."""
    return verl_core_algos(("agg_loss", "compute_policy_loss_vanilla"))


def _batch(seed: int = 0, lengths: list[int] = LENGTHS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    per_token = torch.randn(len(lengths), width, generator=g)
    mask = torch.zeros(len(lengths), width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    return per_token, mask


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("cuts", [[[0, 1, 2, 3, 4, 5]], [[0, 1], [2, 3, 4], [5]], [[i] for i in range(6)]])
def test_micro_shares_add_up_to_verls_agg_loss(mode: str, cuts: list[list[int]]) -> None:
    per_token, mask = _batch()
    whole = MiniBatchSize.of(LENGTHS)
    total = torch.tensor(0.0)
    for rows in cuts:
        width = max(1, max(LENGTHS[i] for i in rows))  # each micro-batch is padded to its own longest
        total = total + micro_share(per_token[rows, :width], mask[rows, :width], mode, whole, norm=NORM)
    want = _verl().agg_loss(per_token, mask, mode, loss_scale_factor=NORM if mode.endswith("-norm") else None)
    assert float(total) == pytest.approx(float(want), rel=1e-6)


#: one mini-batch over two data-parallel ranks: different token and sequence counts, an empty answer
RANK_LENGTHS = ([9, 0, 2], [1, 3, 2, 1, 4, 1])


def _verl_loss(
    verl: SimpleNamespace, per_token: torch.Tensor, mask: torch.Tensor, mode: str, **kw: Any
) -> float:
    norm = NORM if mode.endswith("-norm") else None
    return float(verl.agg_loss(per_token, mask, mode, loss_scale_factor=norm, **kw))


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_shares_over_ranks_equal_verls_global_agg_loss(mode: str) -> None:
    """Each rank's micro-batch shares add up to verl's ``agg_loss`` of its part with
    ``dp_size=2`` and the global token and sequence counts; the ranks' sum over 2 (what averaging
    their gradients descends) is ``agg_loss`` of the whole mini-batch on one rank, while the mean of
    each rank's own loss is not (the ranks hold different numbers of tokens and sequences)."""
    verl = _verl()
    parts = [_batch(10 + r, lengths) for r, lengths in enumerate(RANK_LENGTHS)]
    whole = dataclasses.replace(MiniBatchSize.of([n for ls in RANK_LENGTHS for n in ls]), ranks=2)
    rank_losses = []
    for (per_token, mask), lengths in zip(parts, RANK_LENGTHS, strict=True):
        share = sum(  # micro-batches of two, each padded to its own longest
            float(
                micro_share(
                    per_token[i : i + 2, : max(1, *lengths[i : i + 2])],
                    mask[i : i + 2, : max(1, *lengths[i : i + 2])],
                    mode,
                    whole,
                    norm=NORM,
                )
            )
            for i in range(0, len(lengths), 2)
        )
        theirs = _verl_loss(
            verl,
            per_token,
            mask,
            mode,
            dp_size=2,
            batch_num_tokens=whole.tokens,
            global_batch_size=whole.sequences,
        )
        assert share == pytest.approx(theirs, rel=1e-6)
        rank_losses.append(share)
    width = max(max(ls) for ls in RANK_LENGTHS)
    pad = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for part in parts for t in part]
    per_token, mask = torch.cat(pad[0::2]), torch.cat(pad[1::2])
    one_rank = _verl_loss(verl, per_token, mask, mode)
    assert sum(rank_losses) / 2 == pytest.approx(one_rank, rel=1e-6)
    if mode != "token-sum":  # the case is exercised: each rank's own mean is another loss
        own = sum(_verl_loss(verl, *part, mode) for part in parts) / 2
        assert own != pytest.approx(one_rank, rel=1e-2)


def test_modes_by_hand() -> None:
    """Two sequences: losses [1, 1, 1, 1] and [4]: token-mean 8/5, token-sum 8,
    seq-mean-token-mean (1 + 4)/2, seq-mean-token-sum (4 + 4)/2, and that over 2 for the -norm
    form; over 3 ranks each share is 3 times as large (their gradients are averaged)."""
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    whole = MiniBatchSize.of([4, 1])
    got = {m: float(micro_share(per_token, mask, m, whole, norm=2.0)) for m in LOSS_AGG_MODES}
    want = {
        "token-mean": 1.6,
        "token-sum": 8.0,
        "seq-mean-token-mean": 2.5,
        "seq-mean-token-sum": 4.0,
        "seq-mean-token-sum-norm": 2.0,
    }
    assert got == pytest.approx(want)
    three = dataclasses.replace(whole, ranks=3)
    got = {m: float(micro_share(per_token, mask, m, three, norm=2.0)) for m in LOSS_AGG_MODES}
    assert got == pytest.approx({m: 3 * v for m, v in want.items()})
    with pytest.raises(ValueError, match="'token-sum-typo' is not one of"):
        micro_share(per_token, mask, "token-sum-typo", whole)


@pytest.mark.parametrize("clip_c", [3.0, 1.5])
def test_dual_clip_equals_verls_vanilla_policy_loss(clip_c: float) -> None:
    g = torch.Generator().manual_seed(3)
    per_token, mask = _batch(4)
    old = torch.randn(per_token.shape, generator=g) * 0.3
    logp = old + torch.randn(per_token.shape, generator=g) * 1.2  # ratios up to e^3 and down
    adv = torch.randn(per_token.shape, generator=g)
    al = AlgorithmConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=clip_c)
    ours = clipped_policy_loss(logp, old, adv, mask, al)
    config = VerlActorConfig(
        clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=clip_c, global_batch_info={}
    )
    loss, metrics = _verl().compute_policy_loss_vanilla(old, logp, adv, mask, "token-mean", config)
    assert float(ours.loss) == pytest.approx(float(loss), rel=1e-6)
    assert float(ours.clip_frac) == pytest.approx(metrics["actor/pg_clipfrac"], rel=1e-6)
    assert float(ours.clip_frac_lower) == pytest.approx(metrics["actor/pg_clipfrac_lower"], rel=1e-6)
    assert metrics["actor/pg_clipfrac_lower"] > 0  # the case is exercised


def test_dual_clip_by_hand() -> None:
    """A ratio of 5 with advantage -1: the clipped surrogate gives 5, the dual clip bounds it at
    3 and takes its gradient away; with advantage +1 the dual clip does nothing."""
    logp = torch.log(torch.tensor([[5.0], [5.0]])).requires_grad_(True)
    out = clipped_policy_loss(
        logp,
        torch.zeros(2, 1),
        torch.tensor([-1.0, 1.0]),
        torch.ones(2, 1),
        AlgorithmConfig(clip_ratio_c=3.0),
    )
    assert out.per_token.flatten().tolist() == pytest.approx([3.0, -1.2])
    assert float(out.clip_frac_lower) == pytest.approx(0.5)
    out.loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, 0.0])
    plain = clipped_policy_loss(
        logp.detach(), torch.zeros(2, 1), torch.tensor([-1.0, 1.0]), torch.ones(2, 1), AlgorithmConfig()
    )
    assert plain.per_token.flatten().tolist() == pytest.approx([5.0, -1.2])


def test_verl_keys_map() -> None:
    from rlport.train.config.load import load_config

    cfg = load_config(
        [
            "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm",
            "actor_rollout_ref.actor.loss_scale_factor=512",
            "actor_rollout_ref.actor.clip_ratio_c=10.0",
            "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
            "critic.loss_agg_mode=seq-mean-token-mean",
        ]
    )
    al = cfg.algorithm
    assert (al.loss_agg_mode, al.loss_scale_factor, al.clip_ratio_c) == ("seq-mean-token-sum-norm", 512, 10.0)
    assert al.policy_loss == "gspo"
    assert cfg.critic.loss_agg_mode == "seq-mean-token-mean"
    from rlport.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(["algorithm.clip_ratio_c=1.0"])
    assert (
        "'algorithm.clip_ratio_c' is 1.0" in err.value.message
        and "algorithm.clip_ratio_c=3.0 (verl's dual clip; 0 turns it off)" in err.value.fix
    )


def _samples() -> list[Sample]:
    """Rollouts of different response lengths, so the modes weigh them differently."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(6):
        prompt = torch.randint(3, 100, (4 + i % 2,), generator=g).tolist()
        response = torch.randint(3, 100, (2 + 3 * (i % 3),), generator=g).tolist()
        out.append(Sample.scored(prompt, response, [0.0] * len(response), float(i % 3) - 1.0))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab=None)


def _assert_same_update(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], what: str) -> None:
    """Every weight's change alike, to float32's rounding of the weights (the change is a
    difference of weights: its error grows with the step, large under token-sum)."""
    scale = max(float(g.abs().max()) for g in want.values())
    assert scale > 1e-4, f"{what}: the update did not move the weights"
    assert got.keys() == want.keys()
    for name, g in want.items():
        assert torch.allclose(got[name], g, rtol=1e-4, atol=1e-6 * scale), f"{what}: {name}"


def _update(model: Path, *extra: str) -> dict[str, torch.Tensor]:
    import rlport
    from rlport.train.models.actor import Actor

    cfg = build_config(
        [f"model.path={model}", "actor.strategy=replicated", "actor.lr=1e-3", "actor.grad_clip=0", *extra],
        demo=False,
    )
    torch.manual_seed(0)
    actor = Actor(cfg, path=str(model), device="cpu", rt=rlport.init())
    # plain SGD at rate 1: the change of each weight is its gradient (AdamW's first step is about
    # lr x sign(g), which turns float noise in gradients near 0 into whole steps)
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)
    before = {n: t.clone() for n, t in actor.full_parameters()}
    samples = _samples()
    actor.update(samples, actor.logprobs(samples))
    return {n: before[n] - t for n, t in actor.full_parameters()}


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_an_update_does_not_depend_on_the_micro_batches(mode: str, model: Path) -> None:
    """One mini-batch of 6 in micro-batches of 6 or of 1 gives the same gradient in every mode, and
    the sequence modes give other gradients than token-mean (rollouts of different lengths)."""
    whole = _update(model, f"algorithm.loss_agg_mode={mode}", "actor.micro_batch_size=6")
    cut = _update(model, f"algorithm.loss_agg_mode={mode}", "actor.micro_batch_size=1")
    _assert_same_update(cut, whole, mode)
    if mode != "token-mean":
        token = _update(model, "actor.micro_batch_size=6")
        assert any(not torch.allclose(token[n], g, rtol=1e-2, atol=1e-6) for n, g in whole.items())


#: what each of two ranks holds of one mini-batch of 6 answers: under ddp 2 long and 4 short (other
#: token and sequence counts), under fsdp 3 and 3 of other lengths (FSDP2 gathers the weights in
#: every forward, so its ranks run as many micro-batches)
RANK_SPLITS = {"ddp": ((0, 1), (2, 3, 4, 5)), "fsdp": ((0, 1, 2), (3, 4, 5))}


def _ragged_samples() -> list[Sample]:
    g = torch.Generator().manual_seed(2)
    out = []
    for i, n in enumerate((11, 8, 1, 2, 3, 1)):
        prompt = torch.randint(3, 100, (4 + i % 2,), generator=g).tolist()
        response = torch.randint(3, 100, (n,), generator=g).tolist()
        out.append(Sample.scored(prompt, response, [0.0] * n, float(i % 3) - 0.8))
    return out


def _gradients(
    model: Path,
    strategy: str,
    rank: int,
    world: int,
    extra: tuple[str, ...] = (),
    modes: tuple[str, ...] = LOSS_AGG_MODES,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per mode, the change of every weight in one actor update with plain SGD at rate 1 (its
    gradient) on this rank's samples: all of them with one rank, ``RANK_SPLITS[strategy][rank]``
    with two."""
    import rlport
    from rlport.train.models.actor import Actor

    samples = _ragged_samples()
    if world > 1:
        samples = [samples[i] for i in RANK_SPLITS[strategy][rank]]
    out = {}
    for mode in modes:
        cfg = build_config(
            [
                *extra,
                f"model.path={model}",
                f"actor.strategy={strategy}",
                f"trainer.workers={world}",
                "actor.micro_batch_size=2",
                "actor.grad_clip=0",
                f"algorithm.loss_agg_mode={mode}",
            ],
            demo=False,
        )
        actor = Actor(cfg, path=str(model), device="cpu", rank=rank, world=world, rt=rlport.init())
        actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)
        before = {n: t.clone() for n, t in actor.full_parameters()}
        actor.update(samples, actor.logprobs(samples))
        out[mode] = {n: before[n] - t for n, t in actor.full_parameters()}
    return out


def _two_ranks(
    rank: int,
    model: Path,
    strategy: str,
    store: str,
    out: Path,
    extra: tuple[str, ...] = (),
    modes: tuple[str, ...] = LOSS_AGG_MODES,
) -> None:
    import torch.distributed as dist

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        grads = _gradients(model, strategy, rank, 2, extra, modes)
        if rank == 0:
            torch.save(grads, out)
        dist.barrier()  # no rank leaves while FSDP's last collectives run on the other (a gloo abort)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def one_rank(model: Path) -> dict[str, dict[str, torch.Tensor]]:
    return _gradients(model, "replicated", 0, 1)


@pytest.mark.parametrize("strategy", RANK_SPLITS)
def test_two_ranks_of_unequal_counts_make_the_update_of_one(
    strategy: str, model: Path, one_rank: dict[str, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    """Two gloo ranks (ddp, fsdp) holding parts of one mini-batch with different token counts
    (and, under ddp, sequence counts) make the update that one rank holding all 6 answers makes,
    in every mode: each rank divides by the global token and sequence counts (one all-reduce),
    multiplies by 2, and the strategy averages the ranks' gradients."""

    out = tmp_path / "grads.pt"
    spawn_ranks(_two_ranks, (model, strategy, str(tmp_path / "store"), out))
    two = torch.load(out, weights_only=False)
    for mode in LOSS_AGG_MODES:
        _assert_same_update(two[mode], one_rank[mode], f"{strategy} {mode}")


#: a budget that cuts fsdp's rank 0 (sequences of 16, 12 and 5 tokens) into 3 micro-batches and
#: rank 1 (7, 7 and 6) into 2
DYNAMIC = (
    "actor.use_dynamic_bsz=true",
    "actor.ppo_max_token_len_per_gpu=16",
    "data.max_prompt_length=5",
    "rollout.max_new_tokens=11",
)


def test_fsdp_ranks_whose_budgets_cut_differently_stay_in_step(
    model: Path, one_rank: dict[str, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    """With ``use_dynamic_bsz`` the token budget cuts the two ranks' sequences into 3 and 2
    micro-batches; FSDP gathers the parameters in every forward, so a rank running fewer would
    leave the other waiting in a collective for ever. The ranks agree on the most (one
    all-reduce) and the others cut further; the update is the one of one rank holding all."""
    from rlport.train.models.micro_batches import token_budget_chunks

    samples = _ragged_samples()
    cuts = [
        token_budget_chunks([len(samples[i].prompt_ids) + len(samples[i].response_ids) for i in part], 16)
        for part in RANK_SPLITS["fsdp"]
    ]
    assert [len(c) for c in cuts] == [3, 2]  # the case this test is about
    out = tmp_path / "grads.pt"
    spawn_ranks(
        _two_ranks,
        (model, "fsdp", str(tmp_path / "store"), out, DYNAMIC, ("token-mean",)),
        hang_after=240,
        hang="the two fsdp ranks hung: they ran different numbers of micro-batches",
    )
    two = torch.load(out, weights_only=False)
    _assert_same_update(two["token-mean"], one_rank["token-mean"], "fsdp token-mean, dynamic micro-batches")


def test_even_chunks_halves_the_largest_in_place() -> None:
    from rlport.train.models.micro_batches import even_chunks

    assert even_chunks([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert even_chunks([[0], [1, 2, 3]], 4) == [[0], [1], [2], [3]]
    assert even_chunks([[0, 1]], 1) == [[0, 1]]
    with pytest.raises(ValueError, match="cannot cut 2 sequences into 3"):
        even_chunks([[0], [1]], 3)
