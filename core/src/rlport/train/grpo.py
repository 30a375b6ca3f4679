"""GRPO math on tensors: group-relative advantages, the clipped policy loss, KL (k3) and entropy.

Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask`` are ``(batch, response_len)``; ``mask`` is 1
on response tokens and 0 on padding; ``advantages`` is ``(batch,)`` (one value per sequence,
broadcast over its tokens). ``loss`` fields are token means over the mask (the logged figures);
the update aggregates ``per_token`` by ``algorithm.loss_agg_mode`` (:mod:`rlport.train.loss_agg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def group_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_ids: Sequence[int],
    *,
    epsilon: float = 1e-6,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, over the group's std plus ``epsilon``.

    ``group_ids[i]`` names the prompt sample ``i`` answers. The std is the unbiased sample std (as
    ``torch.std``); a group of one sample gets mean 0 and std 1, as in verl. With
    ``norm_by_std=False`` only the mean is subtracted.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32)
    if r.ndim != 1 or r.numel() != len(group_ids):
        raise ValueError(
            f"rewards must be 1-D with one entry per group id; got {tuple(r.shape)} and {len(group_ids)}"
        )
    ids = torch.as_tensor(list(group_ids))
    adv = torch.empty_like(r)
    for gid in torch.unique(ids).tolist():
        sel = ids == gid
        group = r[sel]
        if group.numel() == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = group.mean(), group.std()
        centred = group - mean
        adv[sel] = centred / (std + epsilon) if norm_by_std else centred
    return adv


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # scalar, differentiable: the token mean of per_token
    per_token: torch.Tensor  # (batch, response_len), differentiable
    clip_frac: torch.Tensor  # share of tokens where the clipped branch was taken
    clip_frac_lower: torch.Tensor  # share of tokens a negative advantage's dual clip bounded
    approx_kl: torch.Tensor  # mean of (old_logp - logp): how far this update moved from the rollout policy


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
) -> PolicyLoss:
    """PPO's clipped surrogate: ``max(-A r, -A clip(r, 1-low, 1+high))`` with
    ``r = exp(logp - old_logp)``; with ``clip_c`` (dual-clip PPO, verl's ``clip_ratio_c``), a
    token with ``A < 0`` loses at most ``-A clip_c``, however large its ratio."""
    adv = advantages.reshape(-1, 1).to(logp.dtype) if advantages.ndim == 1 else advantages.to(logp.dtype)
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    took_clip = (clipped > unclipped).to(logp.dtype)
    took_lower = torch.zeros_like(per_token)
    if clip_c is not None:
        bound = -adv * clip_c
        negative = (adv < 0).expand_as(per_token)
        took_lower = ((per_token > bound) & negative).to(logp.dtype)
        per_token = torch.where(negative, torch.minimum(per_token, bound), per_token)
    return PolicyLoss(
        loss=masked_mean(per_token, mask),
        per_token=per_token,
        clip_frac=masked_mean(took_clip, mask).detach(),
        clip_frac_lower=masked_mean(took_lower, mask).detach(),
        approx_kl=masked_mean(-log_ratio, mask).detach(),
    )


def gspo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
) -> PolicyLoss:
    """GSPO (``algorithm.policy_loss=gspo``, verl's ``loss_mode=gspo``): the clipped surrogate on a
    sequence's ratio ``s = exp(mean over its tokens of (logp - old_logp))``, carried by each token as
    ``sg[s] x exp(logp - sg[logp])`` so that every token gets the sequence's gradient."""
    adv = advantages.reshape(-1, 1).to(logp.dtype) if advantages.ndim == 1 else advantages.to(logp.dtype)
    mask = mask.to(logp.dtype)
    log_ratio = logp - old_logp
    seq = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    ratio = torch.exp(torch.clamp(logp - logp.detach() + seq.detach().unsqueeze(-1), max=10.0))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    return PolicyLoss(
        loss=masked_mean(per_token, mask),
        per_token=per_token,
        clip_frac=masked_mean((clipped > unclipped).to(logp.dtype), mask).detach(),
        clip_frac_lower=torch.zeros((), dtype=logp.dtype),
        approx_kl=masked_mean(-log_ratio, mask).detach(),
    )


def gpg_policy_loss(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> PolicyLoss:
    """GPG (``algorithm.policy_loss=gpg``): the plain policy gradient ``-A logp``, no ratio and no
    clip (with ``algorithm.adv_estimator=gpg``)."""
    adv = advantages.reshape(-1, 1).to(logp.dtype) if advantages.ndim == 1 else advantages.to(logp.dtype)
    per_token = -adv * logp
    zero = torch.zeros((), dtype=logp.dtype)
    return PolicyLoss(
        loss=masked_mean(per_token, mask),
        per_token=per_token,
        clip_frac=zero,
        clip_frac_lower=zero,
        approx_kl=zero,
    )


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(actor || reference): ``exp(ref - logp) - (ref - logp) - 1``,
    non-negative and unbiased; clamped to [-10, 10] in log space for stability, as verl does."""
    diff = torch.clamp(ref_logp - logp, -10.0, 10.0)
    return torch.exp(diff) - diff - 1.0


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / temperature)`` at ``tokens``; logits ``(..., vocab)``, tokens ``(...)``."""
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float()
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
