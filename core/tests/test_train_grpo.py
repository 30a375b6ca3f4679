"""GRPO math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlport.train.algos.grpo import entropy_from_logits, group_advantages, kl_k3, token_logprobs
from rlport.train.algos.masked import masked_mean
from rlport.train.algos.policy_losses import clipped_policy_loss
from rlport.train.config.schema import AlgorithmConfig


def test_group_advantages_by_hand() -> None:
    # group 0: rewards 1,0,0,0 -> mean .25, unbiased std sqrt((.75^2 + 3*.25^2)/3) = 0.5
    # group 1: 0.5, 0.5 -> std 0 -> all zero; group 2: one sample -> (r - 0) / 1
    adv = group_advantages([1, 0, 0, 0, 0.5, 0.5, 2.0], [0, 0, 0, 0, 1, 1, 2], epsilon=1e-6)
    expected = [
        0.75 / 0.500001,
        -0.25 / 0.500001,
        -0.25 / 0.500001,
        -0.25 / 0.500001,
        0.0,
        0.0,
        2.0 / 1.000001,
    ]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    # groups need not be contiguous
    adv2 = group_advantages([0, 1, 1, 0], [5, 7, 5, 7])
    assert adv2[0] < 0 < adv2[2] and adv2[3] < 0 < adv2[1]
    # no std normalisation: just centred
    assert group_advantages([1, 0, 0, 0], [0] * 4, norm_by_std=False).tolist() == [0.75, -0.25, -0.25, -0.25]


def test_clipped_loss_takes_the_pessimistic_branch() -> None:
    # tokens: (ratio 1.5, A=+1) -> clipped -1.2; (1.5, A=-1) -> unclipped 1.5;
    #         (0.5, A=+1) -> unclipped -0.5;     (0.5, A=-1) -> clipped 0.8
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    out = clipped_policy_loss(logp, old, adv, torch.ones(4, 1), AlgorithmConfig())
    assert out.loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8) / 4)
    assert out.clip_frac.item() == pytest.approx(0.5)
    out.loss.backward()
    # the clipped branch has no gradient; the unclipped one has d(-A r)/dlogp = -A r, over 4 tokens
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, 1.5 / 4, -0.5 / 4, 0.0])


def test_clip_bounds_are_asymmetric_and_mask_excludes_padding() -> None:
    old = torch.zeros(1, 3)
    logp = torch.log(torch.tensor([[1.25, 1.25, 9.0]]))
    adv = torch.tensor([1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding: its huge ratio must not count
    low_high = clipped_policy_loss(logp, old, adv, mask, AlgorithmConfig(clip_ratio_high=0.28))
    assert low_high.loss.item() == pytest.approx(-1.25)  # 1.25 < 1.28: not clipped
    assert low_high.clip_frac.item() == 0.0
    sym = clipped_policy_loss(logp, old, adv, mask, AlgorithmConfig())
    assert sym.loss.item() == pytest.approx(-1.2)
    assert sym.approx_kl.item() == pytest.approx(-math.log(1.25))


def test_kl_k3_entropy_and_logprobs() -> None:
    logp, ref = torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3]))
    # exp(ref - logp) - (ref - logp) - 1 = 0.5 + ln 2 - 1; identical policies give 0
    assert kl_k3(logp, ref).tolist() == pytest.approx([0.5 + math.log(2) - 1, 0.0], abs=1e-6)
    assert entropy_from_logits(torch.zeros(2, 4)).tolist() == pytest.approx([math.log(4)] * 2)
    assert entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    assert token_logprobs(logits, torch.tensor([2])).item() == pytest.approx(math.log(0.7), abs=1e-6)
    t2 = token_logprobs(logits, torch.tensor([2]), temperature=2.0).item()  # softmax(log p / 2) ∝ sqrt(p)
    s = math.sqrt(0.1) + math.sqrt(0.2) + math.sqrt(0.7)
    assert t2 == pytest.approx(math.log(math.sqrt(0.7) / s), abs=1e-6)
    assert masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0])).item() == 2.0
    assert masked_mean(torch.tensor([1.0]), torch.tensor([0])).item() == 0.0
