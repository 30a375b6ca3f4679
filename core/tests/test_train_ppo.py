"""PPO's math against values computed by hand and against an independent reference: GAE, the
whitening, the clipped value loss, the KL penalty in the reward and its controllers."""

from __future__ import annotations

import pytest
import torch

from rlport.train.algos.masked import masked_whiten, response_mask
from rlport.train.algos.ppo import (
    AdaptiveKL,
    FixedKL,
    advantages,
    clipped_value_loss,
    gae,
    kl_penalty,
    token_scores,
)


def test_gae_by_hand() -> None:
    # row 0: r = (0, 0, 1), V = (.5, .2, .4), gamma .9, lam .8 (gamma*lam = .72)
    #   t=2: delta = 1 - .4 = .6                 A = .6
    #   t=1: delta = .9*.4 - .2 = .16            A = .16 + .72*.6 = .592
    #   t=0: delta = .9*.2 - .5 = -.32           A = -.32 + .72*.592 = .10624
    # row 1: two tokens then padding whose value (9) must not leak in
    #   t=1: delta = 2 - .3 = 1.7                A = 1.7
    #   t=0: delta = .9*.3 - .1 = .17            A = .17 + .72*1.7 = 1.394
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert adv[0].tolist() == pytest.approx([0.10624, 0.592, 0.6], abs=1e-6)
    assert adv[1, :2].tolist() == pytest.approx([1.394, 1.7], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.60624, 0.792, 1.0], abs=1e-6)
    assert ret[1, :2].tolist() == pytest.approx([1.494, 2.0], abs=1e-6)


def _reference_gae(r: list[float], v: list[float], gamma: float, lam: float) -> list[float]:
    """GAE as the discounted sum of TD errors, A_t = sum_l (gamma lam)^l delta_{t+l}, written out
    (no recursion), over one unpadded response."""
    n = len(r)
    deltas = [r[t] + gamma * (v[t + 1] if t + 1 < n else 0.0) - v[t] for t in range(n)]
    return [sum((gamma * lam) ** (k - t) * deltas[k] for k in range(t, n)) for t in range(n)]


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.99, 0.95), (0.7, 0.0), (0.5, 1.0)])
def test_gae_matches_an_independent_reference(gamma: float, lam: float) -> None:
    gen = torch.Generator().manual_seed(3)
    lengths = [5, 1, 3, 7]
    mask = response_mask(lengths)
    rewards = torch.randn(mask.shape, generator=gen) * mask
    values = torch.randn(mask.shape, generator=gen)  # padding values are junk on purpose
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    for i, n in enumerate(lengths):
        want = _reference_gae(rewards[i, :n].tolist(), values[i, :n].tolist(), gamma, lam)
        assert adv[i, :n].tolist() == pytest.approx(want, abs=1e-5), (i, gamma, lam)
        assert ret[i, :n].tolist() == pytest.approx(
            [a + b for a, b in zip(want, values[i, :n].tolist(), strict=True)], abs=1e-5
        )


def test_gamma_lam_one_gives_outcome_minus_value() -> None:
    """With the score on the last token and gamma = lam = 1, every token's advantage is the score
    minus that token's value, and every return is the score."""
    mask = response_mask([3, 2])
    rewards = token_scores([1.0, -2.0], mask)
    assert rewards.tolist() == [[0.0, 0.0, 1.0], [0.0, -2.0, 0.0]]
    values = torch.tensor([[0.2, 0.4, 0.6], [0.5, -1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.8, 0.6, 0.4])
    assert adv[1, :2].tolist() == pytest.approx([-2.5, -1.0])
    assert (ret * mask).flatten().tolist() == pytest.approx([1.0, 1.0, 1.0, -2.0, -2.0, 0.0])


def test_whitening_is_over_the_mask() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    w = masked_whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-4)  # unbiased, as torch.std
    # by hand: values 1..5, mean 3, unbiased var 2.5
    assert w[0, 0].item() == pytest.approx((1 - 3) / 2.5**0.5, abs=1e-5)


def test_value_loss_takes_the_larger_error_and_clips_the_gradient() -> None:
    # token 0: old 0, v 1, R 2: plain (1-2)^2 = 1, clipped v .5 -> 2.25: the clipped one counts
    # token 1: old 0, v 1, R 0: plain 1, clipped .25 -> the plain one counts
    # token 2: padding with a huge error that must not count
    vpreds = torch.tensor([[1.0, 1.0, 50.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    returns = torch.tensor([[2.0, 0.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = clipped_value_loss(vpreds, old, returns, mask, clip=0.5)
    assert out.loss.item() == pytest.approx(0.5 * (2.25 + 1.0) / 2)
    assert out.clip_frac.item() == pytest.approx(0.5)
    out.loss.backward()
    # the clipped branch is constant in v; the plain one: d/dv 0.5 (v-R)^2 / 2 tokens = (1-0)/2
    assert vpreds.grad.flatten().tolist() == pytest.approx([0.0, 0.5, 0.0])
    wide = clipped_value_loss(vpreds.detach(), old, returns, mask, clip=10.0)  # no clipping
    assert wide.loss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2) and wide.clip_frac.item() == 0.0


def test_kl_penalties_and_controllers() -> None:
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert kl_penalty(logp, ref, "kl").tolist() == pytest.approx([0.5, -1.0])
    assert kl_penalty(logp, ref, "abs").tolist() == pytest.approx([0.5, 1.0])
    assert kl_penalty(logp, ref, "mse").tolist() == pytest.approx([0.125, 0.5])
    # k3: exp(ref - logp) - (ref - logp) - 1
    import math

    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert kl_penalty(logp, ref, "low_var_kl").tolist() == pytest.approx(k3, abs=1e-6)
    with pytest.raises(ValueError, match="full"):
        kl_penalty(logp, ref, "full")
    fixed = FixedKL(0.1)
    fixed.update(5.0, 10)
    assert fixed.value == 0.1
    up = AdaptiveKL(0.1, target_kl=0.1, horizon=100)
    up.update(0.2, n_steps=10)  # error clipped to +0.2: x (1 + 0.2 * 10 / 100)
    assert up.value == pytest.approx(0.102)
    down = AdaptiveKL(0.1, target_kl=0.1, horizon=100)
    down.update(0.09, n_steps=10)  # error -0.1: x (1 - 0.1 * 0.1)
    assert down.value == pytest.approx(0.099)


def test_kl_in_the_reward_is_taken_from_every_token() -> None:
    ctrl = FixedKL(0.5)
    res = advantages(
        [1.0, 0.0], [2, 1], values=None, kl=[[0.2, 0.4], [1.0]], kl_ctrl=ctrl, gamma=1.0, lam=1.0
    )
    # token rewards (0 - .1, 1 - .2) and (0 - .5): summed per sequence for GRPO
    assert res.sequence_rewards == pytest.approx([0.7, -0.5])
    assert res.advantages is None
    assert res.metrics["actor/reward_kl_penalty"] == pytest.approx(
        (0.3 + 1.0) / 2
    )  # mean of per-sequence means
    assert res.metrics["actor/reward_kl_penalty_coeff"] == 0.5
    with_values = advantages(
        [1.0, 0.0],
        [2, 1],
        values=[[0.0, 0.0], [0.0]],
        kl=[[0.2, 0.4], [1.0]],
        kl_ctrl=ctrl,
        gamma=1.0,
        lam=1.0,
    )
    # V = 0, gamma = lam = 1: returns are the reward-to-go: (.7, .8) and (-.5)
    assert torch.cat(with_values.returns).tolist() == pytest.approx([0.7, 0.8, -0.5])
    flat = torch.cat(with_values.advantages)
    assert flat.mean().item() == pytest.approx(0.0, abs=1e-6)  # whitened over the batch


@pytest.mark.parametrize(
    "kind", ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "k1+", "k3+", "low_var_kl+"]
)
def test_every_kl_loss_type_equals_verls_value_and_gradient(kind: str) -> None:
    """algorithm.kl_loss_type (verl's actor.kl_loss_type) in every kind verl takes, the
    straight-through ``+`` kinds included: the value and its gradient as verl's kl_penalty, in
    float64 on differences inside every clamp."""
    from verl_source import verl_functions

    verl = verl_functions(
        "verl/trainer/ppo/core_algos.py", ("kl_penalty", "kl_penalty_forward"), {"torch": torch}
    )
    g = torch.Generator().manual_seed(3)
    base = -torch.rand(64, generator=g, dtype=torch.float64) * 3
    ref = base + torch.randn(64, generator=g, dtype=torch.float64)
    ours_in, theirs_in = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours = kl_penalty(ours_in, ref, kind)
    theirs = verl["kl_penalty"](theirs_in, ref, kind)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    weights = torch.rand(64, generator=g, dtype=torch.float64)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad, rtol=1e-12, atol=1e-12)
    if kind.endswith("+"):  # k2's gradient: logp - ref, whatever the value
        assert torch.allclose(ours_in.grad, weights * (base - ref))


def test_the_kl_loss_takes_verls_kl_loss_type() -> None:
    from rlport.train.config.load import load_config

    assert load_config([]).algorithm.kl_loss_type == "low_var_kl"  # k3, as before and as verl
    cfg = load_config(
        ["actor_rollout_ref.actor.kl_loss_type=k1+", "actor_rollout_ref.actor.use_kl_loss=true"]
    )
    assert (cfg.algorithm.kl_loss_type, cfg.algorithm.use_kl_loss) == ("k1+", True)
    from rlport.errors import ConfigError

    with pytest.raises(ConfigError, match="kl_loss_type"):
        load_config(["algorithm.kl_loss_type=full"])
