"""Advantage estimators without a critic (``algorithm.adv_estimator``), as verl defines them.

Each turns the step's rewards into the advantages the policy loss weighs tokens by. ``gae``
(PPO with a critic) lives in :mod:`rlport.train.algos.ppo`; the others need no value model:

- per sequence, one advantage for all of a response's tokens, from the rewards of its group (the
  ``rollout.n`` answers to one prompt): ``grpo`` (:func:`rlport.train.algos.grpo.group_advantages`),
  ``rloo`` (leave-one-out mean), ``opo`` (length-weighted mean), ``gpg`` (group mean, scaled by
  the share of non-zero rewards), ``grpo_passk`` (only each group's best answer, by its lead over
  the second best);
- per token, from the token rewards (the score on the last token, less the KL penalty with
  ``algorithm.use_kl_in_reward``): ``reinforce_plus_plus`` (discounted returns, whitened over the
  batch), ``reinforce_plus_plus_baseline`` (the group-centred score, whitened), ``remax`` (returns
  less the reward of a greedy answer to the same prompt).

``sequence_rewards`` are the scores less the summed KL penalty, as verl sums its token rewards.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

import torch

from rlport.train.algos.ppo import masked_whiten
from rlport.train.config.choices import GROUPED_ESTIMATORS as GROUPED
from rlport.train.config.choices import PER_TOKEN_ESTIMATORS as PER_TOKEN


def _groups(group_ids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        out[g].append(i)
    return out


def sequence_advantages(
    name: str,
    rewards: Sequence[float],
    group_ids: Sequence[int],
    lengths: Sequence[int],
    *,
    epsilon: float = 1e-6,
    norm_by_std: bool = True,
) -> list[float]:
    """One advantage per sample for the estimator ``name`` (one of :data:`GROUPED`)."""
    from rlport.train.algos.grpo import group_advantages

    if name == "grpo":
        return group_advantages(rewards, group_ids, epsilon=epsilon, norm_by_std=norm_by_std).tolist()
    r = [float(x) for x in rewards]
    out = list(r)
    groups = _groups(group_ids)
    if name == "rloo":
        # each reward less the mean of the others in its group: n/(n-1) (r - mean)
        for members in groups.values():
            n = len(members)
            if n > 1:
                mean = statistics.fmean(r[i] for i in members)
                for i in members:
                    out[i] = (r[i] - mean) * n / (n - 1)
        return out
    if name == "opo":
        # less the group's mean weighted by response length (the optimal baseline of OPO)
        for members in groups.values():
            if len(members) > 1:
                total = sum(lengths[i] for i in members)
                base = sum(lengths[i] * r[i] for i in members) / max(1, total)
                for i in members:
                    out[i] = r[i] - base
            else:
                out[members[0]] = r[members[0]]
        return out
    if name == "gpg":
        # the group-centred reward times the batch size over its non-zero rewards
        alpha = len(r) / max(1, sum(1 for x in r if x != 0))
        for members in groups.values():
            mean = statistics.fmean(r[i] for i in members) if len(members) > 1 else 0.0
            for i in members:
                out[i] = alpha * (r[i] - mean)
        return out
    if name == "grpo_passk":
        # Pass@k: only the group's best answer is pushed, by its lead over the second best
        out = [0.0] * len(r)
        for gid, members in groups.items():
            if len(members) < 2:
                raise ValueError(
                    f"grpo_passk needs at least 2 samples per group; group {gid} has {len(members)}"
                )
            values = torch.tensor([r[i] for i in members])
            top, where = torch.topk(values, 2)
            lead = float(top[0] - top[1])
            if norm_by_std:
                lead /= float(values.std()) + epsilon
            out[members[int(where[0])]] = lead
        return out
    raise ValueError(f"{name!r} is not a per-sequence advantage estimator ({', '.join(GROUPED)})")


def token_advantages(
    name: str,
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_ids: Sequence[int],
    gamma: float = 1.0,
    baselines: Sequence[float] | None = None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-token advantages and returns for the estimator ``name`` (one of :data:`PER_TOKEN`),
    from ``token_rewards`` ``(batch, width)`` over ``mask``; ``baselines`` (``remax``): the reward of
    each sample's greedy answer."""
    lengths = mask.sum(-1).long().tolist()
    if name == "reinforce_plus_plus":
        returns = torch.zeros_like(token_rewards)
        running = torch.zeros(token_rewards.shape[0])
        for t in reversed(range(token_rewards.shape[1])):
            running = (token_rewards[:, t] + gamma * running) * mask[:, t] + running * (1 - mask[:, t])
            returns[:, t] = running * mask[:, t]
        adv = masked_whiten(returns, mask) * mask
    elif name == "reinforce_plus_plus_baseline":
        scores = token_rewards.sum(-1)
        centred = scores.clone()
        for members in _groups(group_ids).values():
            if len(members) > 1:
                centred[members] = scores[members] - scores[members].mean()
        returns = centred.unsqueeze(-1) * mask
        adv = masked_whiten(returns, mask) * mask
    elif name == "remax":
        if baselines is None:
            raise ValueError("remax needs the reward of a greedy answer per sample (baselines)")
        returns = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)
        adv = returns - torch.tensor(list(baselines), dtype=returns.dtype).unsqueeze(-1) * mask
    else:
        raise ValueError(f"{name!r} is not a per-token advantage estimator ({', '.join(PER_TOKEN)})")
    return (
        [adv[i, :n].tolist() for i, n in enumerate(lengths)],
        [returns[i, :n].tolist() for i, n in enumerate(lengths)],
    )
