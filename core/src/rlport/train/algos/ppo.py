"""PPO's math on tensors, beside GRPO's (:mod:`rlport.train.algos.grpo`): token rewards with the KL
penalty, GAE advantages and returns, advantage whitening, the clipped value loss and the KL
controllers.

Shapes: ``rewards``, ``values``, ``mask`` are ``(batch, response_len)``; ``mask`` is 1 on response
tokens and 0 on padding. As verl does, a sequence's score sits on its last response token, and the
KL penalty (``algorithm.use_kl_in_reward``) is taken from every token's reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlport.train.algos.grpo import kl_k3
from rlport.train.algos.masked import masked_mean, masked_whiten, pad_rows, response_mask, unpad_rows
from rlport.train.config.choices import KL_PENALTIES


def token_scores(scores: Sequence[float], mask: torch.Tensor) -> torch.Tensor:
    """``(batch, len)`` zeros with each sequence's score on its last response token (a sequence
    without tokens keeps none)."""
    out = torch.zeros_like(mask, dtype=torch.float32)
    lengths = mask.sum(dim=-1).long()
    for i, (score, n) in enumerate(zip(scores, lengths.tolist(), strict=True)):
        if n > 0:
            out[i, n - 1] = float(score)
    return out


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Per-token KL estimate of the actor (``logp``, the rollout's recomputed logprobs) against the
    reference: ``kl``/``k1`` is ``logp - ref``, ``abs`` its size, ``mse``/``k2`` half its square,
    ``low_var_kl``/``k3`` the k3 estimator (:func:`rlport.train.algos.grpo.kl_k3`). A trailing ``+``
    (``k3+``) keeps that value and takes k2's gradient, whose expectation is the gradient of the KL
    (straight-through, as verl's ``kl_penalty``); k2 is its own."""
    if kind.endswith("+"):
        value = kl_penalty(logp, ref_logp, kind[:-1])
        grad = 0.5 * (logp - ref_logp).square()
        return grad - grad.detach() + value.detach()
    diff = logp - ref_logp
    if kind in ("kl", "k1"):
        return diff
    if kind == "abs":
        return diff.abs()
    if kind in ("mse", "k2"):
        return 0.5 * diff.square()
    if kind in ("low_var_kl", "k3"):
        return kl_k3(logp, ref_logp)
    raise ValueError(f"algorithm.kl_penalty={kind!r}; expected one of {', '.join(KL_PENALTIES)}")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response, from its last token back:
    ``delta_t = r_t + gamma V_{t+1} - V_t`` and ``A_t = delta_t + gamma lam A_{t+1}``, with
    ``V`` and ``A`` after the last token 0. Masked positions pass the next value and advantage
    through unchanged. Returns ``(advantages, returns)``, ``returns = advantages + values``; the
    advantages are not whitened (:func:`masked_whiten`)."""
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    batch, length = rewards.shape
    next_value = torch.zeros(batch)
    next_adv = torch.zeros(batch)
    adv = torch.zeros(batch, length)
    for t in range(length - 1, -1, -1):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        here = delta + gamma * lam * next_adv
        next_value = m * values[:, t] + (1 - m) * next_value
        next_adv = m * here + (1 - m) * next_adv
        adv[:, t] = next_adv
    return adv, adv + values


@dataclass
class ValueLoss:
    loss: torch.Tensor  # scalar, differentiable: the token mean of per_token
    per_token: torch.Tensor  # (batch, response_len), differentiable
    clip_frac: torch.Tensor  # share of tokens where the clipped prediction gave the larger error


def clipped_value_loss(
    vpreds: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, clip: float
) -> ValueLoss:
    """PPO's clipped value loss per token, ``0.5 max((v - R)^2, (clip(v, old - c, old + c) - R)^2)``
    (``c``: ``critic.cliprange_value``), and its token mean."""
    clipped = torch.clamp(vpreds, old_values - clip, old_values + clip)
    plain = (vpreds - returns).square()
    bounded = (clipped - returns).square()
    per_token = 0.5 * torch.maximum(plain, bounded)
    return ValueLoss(
        loss=masked_mean(per_token, mask),
        per_token=per_token,
        clip_frac=masked_mean((bounded > plain).float(), mask).detach(),
    )


class FixedKL:
    """``algorithm.kl_ctrl.type=fixed``: the coefficient stays ``kl_coef``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing changes."""


class AdaptiveKL(FixedKL):
    """``algorithm.kl_ctrl.type=adaptive`` (Ziegler et al. 2019): after each step the coefficient
    is multiplied by ``1 + clip(kl / target_kl - 1, -0.2, 0.2) * n_steps / horizon``, so it grows
    while the measured KL is above ``target_kl`` and shrinks below."""

    def __init__(self, kl_coef: float, target_kl: float, horizon: int) -> None:
        super().__init__(kl_coef)
        self.target, self.horizon = target_kl, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(0.2, max(-0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon


def kl_controller(kind: str, *, kl_coef: float, target_kl: float, horizon: int) -> FixedKL:
    """The controller ``algorithm.kl_ctrl`` names."""
    if kind == "adaptive":
        return AdaptiveKL(kl_coef, target_kl, horizon)
    return FixedKL(kl_coef)


@dataclass
class Advantages:
    """Per sample in order: GAE's ``(R,)`` ``advantages`` and ``returns`` (``None`` without
    values), the ``sequence_rewards`` (the score less the summed KL penalty); and the metrics."""

    advantages: list[torch.Tensor] | None
    returns: list[torch.Tensor] | None
    sequence_rewards: list[float]
    metrics: dict[str, float]
    token_rewards: torch.Tensor | None = None  # (batch, width): for the per-token estimators
    mask: torch.Tensor | None = None


def advantages(
    scores: Sequence[float],
    lengths: Sequence[int],
    *,
    values: Sequence[torch.Tensor | Sequence[float]] | None,
    kl: Sequence[torch.Tensor | Sequence[float]] | None,
    kl_ctrl: FixedKL | None,
    gamma: float,
    lam: float,
) -> Advantages:
    """Token rewards (each score on its last token, less ``kl_ctrl.value`` x the per-token ``kl``
    when given, after which the controller is updated with the batch's mean KL), then, with
    ``values``, GAE advantages whitened over the batch and the returns."""
    mask = response_mask(lengths)
    width = mask.shape[1]
    rewards = token_scores(scores, mask)
    metrics: dict[str, float] = {}
    if kl is not None and kl_ctrl is not None:
        kld = pad_rows(kl, width) * mask
        beta = kl_ctrl.value
        rewards = rewards - beta * kld
        per_seq = kld.sum(-1) / mask.sum(-1).clamp_min(1.0)
        current = float(per_seq.mean().item())
        kl_ctrl.update(current, n_steps=len(scores))
        metrics["actor/reward_kl_penalty"] = current
        metrics["actor/reward_kl_penalty_coeff"] = beta
    sequence_rewards = rewards.sum(-1).tolist()
    if values is None:
        return Advantages(None, None, sequence_rewards, metrics, rewards, mask)
    v = pad_rows(values, width)
    adv, ret = gae(rewards, v, mask, gamma=gamma, lam=lam)
    adv = masked_whiten(adv, mask)
    metrics["critic/values_mean"] = float(masked_mean(v, mask).item())
    metrics["critic/returns_mean"] = float(masked_mean(ret, mask).item())
    rows_adv, rows_ret = unpad_rows(adv, lengths), unpad_rows(ret, lengths)
    return Advantages(rows_adv, rows_ret, sequence_rewards, metrics, rewards, mask)
