"""GRPO math on tensors: group-relative advantages, KL (k3), entropy and token logprobs (the
policy losses are :mod:`rlport.train.algos.policy_losses`').

Shapes: ``logp``, ``ref_logp``, ``mask`` are ``(batch, response_len)``; ``mask`` is 1 on response
tokens and 0 on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(actor || reference): ``exp(ref - logp) - (ref - logp) - 1``,
    non-negative and unbiased; for stability, as verl 0.9.1 does, ``ref - logp`` is clamped to
    [-20, 20] and the estimate to at most 10 (a token the reference finds far likelier than the
    actor does adds at most 10, and no gradient)."""
    diff = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(diff) - diff - 1.0, min=-10.0, max=10.0)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or as it is when wider (float64: the tests' reference computations)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(at_least_float32(logits), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(logits / temperature)`` at ``tokens``; logits ``(..., vocab)``, tokens ``(...)``."""
    scaled = at_least_float32(logits)
    scaled = scaled / temperature if temperature != 1.0 else scaled
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
