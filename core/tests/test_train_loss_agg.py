"""``algorithm.loss_agg_mode`` / ``critic.loss_agg_mode`` and dual-clip PPO
(``algorithm.clip_ratio_c``): the micro-batch shares add up to verl's own ``agg_loss`` of the whole
mini-batch however it is cut, the clipped loss equals verl's ``compute_policy_loss_vanilla``, and an
actor update does not depend on the micro-batch size in any mode."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from verl_source import VerlActorConfig, verl_core_algos

from rlport.train.cli import build_config
from rlport.train.config import LOSS_AGG_MODES, AlgorithmConfig
from rlport.train.loss_agg import MiniBatchSize, micro_share
from rlport.train.policy_losses import clipped_policy_loss
from rlport.train.trained import Sample

LENGTHS = [5, 1, 7, 0, 3, 7]  # a sequence without response tokens among them
NORM = 9.0


def _verl() -> SimpleNamespace:
    """verl's agg_loss and compute_policy_loss_vanilla."""
    return verl_core_algos(("agg_loss", "compute_policy_loss_vanilla"))


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(LENGTHS)
    per_token = torch.randn(len(LENGTHS), width, generator=g)
    mask = torch.zeros(len(LENGTHS), width)
    for i, n in enumerate(LENGTHS):
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


def test_modes_by_hand() -> None:
    """Two sequences: losses [1, 1, 1, 1] and [4]: token-mean 8/5, seq-mean-token-mean (1 + 4)/2,
    seq-mean-token-sum (4 + 4)/2, and that over 2 for the -norm form."""
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    whole = MiniBatchSize.of([4, 1])
    got = {m: float(micro_share(per_token, mask, m, whole, norm=2.0)) for m in LOSS_AGG_MODES}
    assert got == pytest.approx(
        {
            "token-mean": 1.6,
            "seq-mean-token-mean": 2.5,
            "seq-mean-token-sum": 4.0,
            "seq-mean-token-sum-norm": 2.0,
        }
    )
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
    from rlport.train.config import load_config

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
        out.append(Sample(prompt, response, [0.0] * len(response), advantage=float(i % 3) - 1.0))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab=None)


def _update(model: Path, *extra: str) -> dict[str, torch.Tensor]:
    import rlport
    from rlport.train.actor import Actor

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
    for name, g in whole.items():
        assert torch.allclose(cut[name], g, rtol=1e-4, atol=1e-7), name
    if mode != "token-mean":
        token = _update(model, "actor.micro_batch_size=6")
        assert any(not torch.allclose(token[n], g, rtol=1e-2, atol=1e-6) for n, g in whole.items())
