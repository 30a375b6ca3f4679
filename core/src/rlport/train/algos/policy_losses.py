"""The policy losses ``algorithm.policy_loss`` names (verl's ``actor.policy_loss.loss_mode``).

Each takes ``logp`` (the actor's logprobs now), ``old_logp`` (the rollout policy's), ``advantages``
(``(batch,)``, one per sequence, or ``(batch, response_len)``), ``mask`` (1 on response tokens)
and the run's :class:`~rlport.train.config.schema.AlgorithmConfig` (the clip ratios, ``clip_ratio_c``,
``policy_loss_options``), and returns a :class:`PolicyLoss`: per-token losses, which the update
aggregates by ``algorithm.loss_agg_mode`` (:func:`rlport.train.algos.loss_agg.micro_share`), and verl's
metrics where rlport has a slot for them. :data:`POLICY_LOSSES` maps each name onto its function.

A loss on a sequence's value (``geo_mean``) carries that value on each of the sequence's tokens,
so that their sequence mean (``seq-mean-token-mean``, which the configuration sets for ``geo_mean``
and ``sapo`` as verl takes them) is the mean over sequences. Where verl clamps the log-ratio to
[-20, 20] before ``exp``, these do too. Each equals verl's ``compute_policy_loss_<name>``, loss and gradient
(``core/tests/test_train_policy_losses.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlport.train.algos.masked import masked_mean
from rlport.train.config.schema import AlgorithmConfig


@dataclass
class PolicyLoss:
    """A policy loss of one micro-batch: its per-token losses and the figures the actor logs."""

    loss: Tensor  # scalar, differentiable: the token mean of per_token
    per_token: Tensor  # (batch, response_len), differentiable
    clip_frac: Tensor  # share of tokens the loss's clip (or selection) took out of the plain gradient
    clip_frac_lower: Tensor  # share of tokens its lower bound (dual clip, truncation) bounded
    approx_kl: Tensor  # verl's ppo_kl: mostly the mean of (old_logp - logp)


PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, AlgorithmConfig], PolicyLoss]


def _token_advantages(advantages: Tensor, logp: Tensor) -> Tensor:
    """``advantages`` on every token, shaped as ``logp``."""
    adv = advantages.reshape(-1, 1) if advantages.ndim == 1 else advantages
    return adv.to(logp.dtype).expand_as(logp)


def _stable_log_ratio(logp: Tensor, old_logp: Tensor) -> Tensor:
    """``logp - old_logp`` clamped to [-20, 20], as verl clamps it before ``exp``."""
    return torch.clamp(logp - old_logp, -20.0, 20.0)


def _result(
    per_token: Tensor,
    mask: Tensor,
    *,
    approx_kl: Tensor,
    clip: Tensor | None = None,
    lower: Tensor | None = None,
) -> PolicyLoss:
    """The :class:`PolicyLoss` of ``per_token``; ``clip`` / ``lower`` flag the tokens counted in
    the two clip fractions (none: 0)."""
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)

    def share(flags: Tensor | None) -> Tensor:
        return zero if flags is None else masked_mean(flags.to(per_token.dtype), mask).detach()

    return PolicyLoss(
        loss=masked_mean(per_token, mask),
        per_token=per_token,
        clip_frac=share(clip),
        clip_frac_lower=share(lower),
        approx_kl=masked_mean(approx_kl, mask).detach(),
    )


def _ppo_surrogate(ratio: Tensor, adv: Tensor, al: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate ``max(-A r, -A clip(r, 1-low, 1+high))`` and where the clipped
    branch is taken."""
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - al.clip_ratio_low, 1.0 + al.clip_ratio_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def clipped_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``vanilla``: PPO's clipped surrogate on ``r = exp(logp - old_logp)``; with
    ``clip_ratio_c`` (dual-clip PPO) a token with ``A < 0`` loses at most ``-A clip_ratio_c``,
    however large its ratio."""
    adv = _token_advantages(advantages, logp)
    log_ratio = _stable_log_ratio(logp, old_logp)
    per_token, took_clip = _ppo_surrogate(torch.exp(log_ratio), adv, al)
    took_lower = None
    if al.clip_ratio_c:
        bound = -adv * al.clip_ratio_c
        negative = adv < 0
        took_lower = (per_token > bound) & negative
        per_token = torch.where(negative, torch.minimum(per_token, bound), per_token)
    return _result(per_token, mask, approx_kl=-log_ratio, clip=took_clip, lower=took_lower)


def gspo_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``gspo``: the clipped surrogate on a sequence's ratio ``s = exp(mean over its tokens of
    (logp - old_logp))``, carried by each token as ``sg[s] x exp(logp - sg[logp])`` so that every
    token gets the sequence's gradient."""
    adv = _token_advantages(advantages, logp)
    m = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    seq = (log_ratio * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    ratio = torch.exp(torch.clamp(logp - logp.detach() + seq.detach().unsqueeze(-1), max=10.0))
    per_token, took_clip = _ppo_surrogate(ratio, adv, al)
    return _result(per_token, mask, approx_kl=-log_ratio, clip=took_clip)


def gpg_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``gpg``: the plain policy gradient ``-A logp``, no ratio and no clip (with
    ``algorithm.adv_estimator=gpg``); verl reports no metrics for it, so they are 0."""
    per_token = -_token_advantages(advantages, logp) * logp
    return _result(per_token, mask, approx_kl=torch.zeros_like(logp))


def geo_mean_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``geo_mean`` (GMPO): a sequence's loss is ``-A exp(mean over its tokens of the clipped
    log-ratio)``, the geometric mean of its token ratios, where a token with ``A > 0`` has its
    log-ratio capped at ``clip_ratio_high``, one with ``A < 0`` floored at ``-clip_ratio_low``, and
    one with ``A = 0`` counts as 0. ``A`` is the sequence's mean advantage.

    The sequence's loss sits on each of its tokens: under ``seq-mean-token-mean`` the loss is the
    mean over the mini-batch's sequences. verl takes ``torch.mean`` over a micro-batch's rows (an
    answer without tokens counting as a loss of 0; rlport leaves it out, as its sequence modes do)
    and adds up the micro-batches, so the two agree on a mini-batch of one micro-batch. The clip
    fractions are verl's: tokens whose log-ratio lies outside [-low, high], with ``A > 0``
    (``clip_frac``) or ``A < 0`` (``clip_frac_lower``)."""
    adv = _token_advantages(advantages, logp)
    m = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    capped = torch.where(
        adv > 0,
        log_ratio.clamp(max=al.clip_ratio_high),
        torch.where(adv < 0, log_ratio.clamp(min=-al.clip_ratio_low), torch.zeros_like(log_ratio)),
    )
    lengths = m.sum(-1).clamp_min(1.0)
    seq_ratio = torch.exp((capped * m).sum(-1) / lengths)
    seq_adv = (adv * m).sum(-1) / lengths
    per_token = (-seq_adv * seq_ratio).unsqueeze(-1).expand_as(logp)
    outside = (log_ratio < -al.clip_ratio_low) | (log_ratio > al.clip_ratio_high)
    return _result(per_token, mask, approx_kl=-log_ratio, clip=outside & (adv > 0), lower=outside & (adv < 0))


def cispo_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``cispo``: ``-sg[clip(r, 1-low, 1+high)] A logp``: the clipped ratio weighs the token's
    policy gradient but carries none itself, so a clipped token still learns (PPO's clip takes
    its gradient away). ``clip_frac`` is the share of ratios the clip changed."""
    adv = _token_advantages(advantages, logp)
    log_ratio = _stable_log_ratio(logp, old_logp)
    ratio = torch.exp(log_ratio)
    low, high = 1.0 - al.clip_ratio_low, 1.0 + al.clip_ratio_high
    per_token = -torch.clamp(ratio, low, high).detach() * adv * logp
    return _result(per_token, mask, approx_kl=-log_ratio, clip=(ratio < low) | (ratio > high))


def _centred_product(adv: Tensor, logp: Tensor, mask: Tensor) -> Tensor:
    """Each token's share of the covariance of advantage and logprob over the masked tokens:
    ``(A - mean A) (logp - mean logp)``."""
    return (adv - masked_mean(adv, mask)) * (logp - masked_mean(logp, mask))


def clip_cov_selection(
    adv: Tensor, logp: Tensor, mask: Tensor, clipped: Tensor, al: AlgorithmConfig
) -> Tensor:
    """The tokens ``clip_cov`` takes the gradient from: among response tokens PPO's clip left
    alone whose covariance term lies strictly between ``clip_cov_lb`` and ``clip_cov_ub``,
    ``max(1, int(clip_cov_ratio x response tokens))`` drawn at random (all of them if fewer).

    The draw is ``torch.randperm`` of the candidates in row-major order on the default CPU
    generator, which is how verl draws them: seeded alike, both pick the same tokens."""
    o = al.policy_loss_options
    with torch.no_grad():
        cov = _centred_product(adv, logp, mask)
        valid = mask > 0
        candidates = valid & ~clipped & (cov > o.clip_cov_lb) & (cov < o.clip_cov_ub)
        where = candidates.flatten().nonzero().squeeze(-1)
        chosen = torch.zeros_like(candidates).flatten()
        if where.numel():
            budget = max(int(o.clip_cov_ratio * valid.sum().item()), 1)
            chosen[where[torch.randperm(where.numel())[:budget].to(where.device)]] = True
    return chosen.view_as(candidates)


def clip_cov_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``clip_cov`` (Clip-Cov): PPO's clipped surrogate with a few tokens of high covariance
    between advantage and logprob (:func:`clip_cov_selection`) given no loss and no gradient, to
    keep the policy's entropy from collapsing. ``clip_frac`` is the share of those tokens (verl's
    ``pg_clipfrac`` here); the selection is per micro-batch, as verl's."""
    adv = _token_advantages(advantages, logp)
    log_ratio = logp - old_logp
    surrogate, took_clip = _ppo_surrogate(torch.exp(log_ratio), adv, al)
    chosen = clip_cov_selection(adv, logp.detach(), mask, took_clip, al)
    per_token = torch.where(chosen, torch.zeros_like(surrogate), surrogate)
    return _result(per_token, mask, approx_kl=-log_ratio, clip=chosen)


def kl_cov_selection(adv: Tensor, logp: Tensor, mask: Tensor, al: AlgorithmConfig) -> Tensor:
    """The tokens ``kl_cov`` penalises: the ``max(1, int(kl_cov_ratio x response tokens))``
    response tokens of largest covariance term (``torch.topk``; no draw)."""
    with torch.no_grad():
        valid = mask.flatten() > 0
        where = valid.nonzero().squeeze(-1)
        chosen = torch.zeros_like(valid)
        if where.numel():
            a, lp = adv.flatten()[where], logp.flatten()[where]
            cov = (a - a.mean()) * (lp - lp.mean())
            k = max(1, int(where.numel() * al.policy_loss_options.kl_cov_ratio))
            chosen[where[torch.topk(cov, k).indices]] = True
    return chosen.view_as(mask)


def kl_cov_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``kl_cov`` (KL-Cov): the unclipped ``-A r``, plus ``ppo_kl_coef x |logp - old_logp|`` on
    the tokens of largest covariance between advantage and logprob (:func:`kl_cov_selection`, per
    micro-batch). ``approx_kl`` is verl's ``ppo_kl`` here, the mean of ``|logp - old_logp|``."""
    adv = _token_advantages(advantages, logp)
    log_ratio = logp - old_logp
    plain = -adv * torch.exp(log_ratio)
    chosen = kl_cov_selection(adv, logp.detach(), mask, al)
    per_token = torch.where(chosen, plain + al.policy_loss_options.ppo_kl_coef * log_ratio.abs(), plain)
    return _result(per_token, mask, approx_kl=log_ratio.abs())


def sapo_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``sapo`` (SAPO): a smooth gate instead of the clip, ``-A (4 / tau) sigmoid(tau (r - 1))``,
    whose gradient is the policy gradient's at ``r = 1`` and fades as the ratio moves away;
    ``tau`` is ``policy_loss_options.tau_pos`` where ``A > 0``, else ``tau_neg``. verl aggregates
    it as ``seq-mean-token-mean`` whatever ``loss_agg_mode`` says, and so does rlport (its
    configuration sets that mode)."""
    adv = _token_advantages(advantages, logp)
    o = al.policy_loss_options
    log_ratio = _stable_log_ratio(logp, old_logp)
    tau = torch.where(adv > 0, o.tau_pos, o.tau_neg).to(logp.dtype)
    gate = torch.sigmoid(tau * (torch.exp(log_ratio) - 1.0)) * (4.0 / tau)
    return _result(-gate * adv, mask, approx_kl=-log_ratio)


def dro_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``dro`` (Direct Reward Optimization): ``-(A logp - beta/2 (logp - old_logp)^2)``, the
    policy gradient with a quadratic pull towards the rollout policy (``policy_loss_options.dro_beta``)."""
    beta = al.policy_loss_options.dro_beta
    if beta is None or beta <= 0:
        raise ValueError(
            f"policy_loss=dro needs policy_loss_options.dro_beta above 0, got {beta!r}; "
            "set algorithm.policy_loss_options.dro_beta=0.1"
        )
    log_ratio = logp - old_logp
    per_token = -(logp * _token_advantages(advantages, logp) - 0.5 * beta * log_ratio.square())
    return _result(per_token, mask, approx_kl=-log_ratio)


TrustRegion = Callable[[Tensor, Tensor, Tensor, AlgorithmConfig], Tensor]


def _dppo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    al: AlgorithmConfig,
    inside: TrustRegion,
) -> PolicyLoss:
    """DPPO: ``-A sg[min(r, clip_ratio_c)] logp`` on the tokens ``inside`` the trust region
    (``inside(logp, old_logp, adv, al)``), none elsewhere. ``clip_ratio_c`` truncates the ratio
    (0: no truncation; verl's config truncates at its 3); ``clip_frac`` is the share of tokens
    outside the region, ``clip_frac_lower`` of those inside with a truncated ratio."""
    adv = _token_advantages(advantages, logp)
    log_ratio = _stable_log_ratio(logp, old_logp)
    ratio = torch.exp(log_ratio)
    cap = al.clip_ratio_c or math.inf
    with torch.no_grad():
        keep = inside(logp, old_logp, adv, al)
    per_token = -adv * torch.clamp(ratio, max=cap).detach() * logp * keep.to(logp.dtype)
    return _result(per_token, mask, approx_kl=-log_ratio, clip=~keep, lower=(ratio > cap) & keep)


def _within_tv(logp: Tensor, old_logp: Tensor, adv: Tensor, al: AlgorithmConfig) -> Tensor:
    """Binary TV: the token's probability rose by at most ``clip_ratio_high`` (``A > 0``) or fell
    by at most ``clip_ratio_low`` (``A <= 0``)."""
    moved = torch.exp(logp) - torch.exp(old_logp)
    return torch.where(adv > 0, moved <= al.clip_ratio_high, moved >= -al.clip_ratio_low)


def _within_kl(logp: Tensor, old_logp: Tensor, adv: Tensor, al: AlgorithmConfig) -> Tensor:
    """Binary KL: the KL between the old and the new Bernoulli (this token or another) is at most
    ``clip_ratio_high`` (``A > 0``) or ``clip_ratio_low`` (``A <= 0``), or the probability moved
    against the advantage (fell with ``A > 0``, rose with ``A <= 0``), which the gradient undoes."""
    p, p_old = torch.exp(logp), torch.exp(old_logp)
    kl = p_old * (old_logp - logp) + (1.0 - p_old) * torch.log((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8))
    return torch.where(
        adv > 0, (kl <= al.clip_ratio_high) | (p <= p_old), (kl <= al.clip_ratio_low) | (p >= p_old)
    )


def dppo_tv_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``dppo_tv`` (DPPO-Binary-TV): :func:`_dppo`'s loss in the total-variation trust region;
    ``clip_ratio_low`` / ``clip_ratio_high`` are its thresholds on the probability's change."""
    return _dppo(logp, old_logp, advantages, mask, al, _within_tv)


def dppo_kl_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> PolicyLoss:
    """``dppo_kl`` (DPPO-Binary-KL): :func:`_dppo`'s loss in the binary-KL trust region;
    ``clip_ratio_low`` / ``clip_ratio_high`` are its thresholds on that KL."""
    return _dppo(logp, old_logp, advantages, mask, al, _within_kl)


#: ``algorithm.policy_loss`` -> its loss
POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "vanilla": clipped_policy_loss,
    "gspo": gspo_policy_loss,
    "gpg": gpg_policy_loss,
    "geo_mean": geo_mean_policy_loss,
    "cispo": cispo_policy_loss,
    "clip_cov": clip_cov_policy_loss,
    "kl_cov": kl_cov_policy_loss,
    "sapo": sapo_policy_loss,
    "dro": dro_policy_loss,
    "dppo_tv": dppo_tv_policy_loss,
    "dppo_kl": dppo_kl_policy_loss,
}
