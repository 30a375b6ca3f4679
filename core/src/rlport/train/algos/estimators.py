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

Each estimator is one function registered under its name (as verl's ``register_adv_est``):
:data:`SEQUENCE` holds the per-sequence ones, :data:`TOKEN` the per-token ones; a new estimator is
one decorated function (and its name in :mod:`rlport.train.config.choices`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from rlport.train.algos.masked import masked_whiten


def _groups(group_ids: Sequence[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        out[g].append(i)
    return out


#: ``(rewards, group_ids, lengths, epsilon, norm_by_std) -> one advantage per sample``
SequenceEstimator = Callable[[list[float], Sequence[int], Sequence[int], float, bool], list[float]]
#: ``(token_rewards, mask, group_ids, gamma, baselines) -> (advantages, returns)``, both ``(batch, width)``
TokenEstimator = Callable[
    [torch.Tensor, torch.Tensor, Sequence[int], float, Sequence[float] | None],
    tuple[torch.Tensor, torch.Tensor],
]
SEQUENCE: dict[str, SequenceEstimator] = {}
TOKEN: dict[str, TokenEstimator] = {}


def sequence_estimator(name: str) -> Callable[[SequenceEstimator], SequenceEstimator]:
    def register(fn: SequenceEstimator) -> SequenceEstimator:
        SEQUENCE[name] = fn
        return fn

    return register


def token_estimator(name: str) -> Callable[[TokenEstimator], TokenEstimator]:
    def register(fn: TokenEstimator) -> TokenEstimator:
        TOKEN[name] = fn
        return fn

    return register


@sequence_estimator("grpo")
def _grpo(
    r: list[float], group_ids: Sequence[int], lengths: Sequence[int], epsilon: float, norm: bool
) -> list[float]:
    from rlport.train.algos.grpo import group_advantages

    return group_advantages(r, group_ids, epsilon=epsilon, norm_by_std=norm).tolist()


@sequence_estimator("rloo")
def _rloo(
    r: list[float], group_ids: Sequence[int], lengths: Sequence[int], epsilon: float, norm: bool
) -> list[float]:
    """Each reward less the mean of the others in its group: n/(n-1) (r - mean)."""
    groups = _groups(group_ids)
    out = list(r)
    for members in groups.values():
        n = len(members)
        if n > 1:
            mean = statistics.fmean(r[i] for i in members)
            for i in members:
                out[i] = (r[i] - mean) * n / (n - 1)
    return out


@sequence_estimator("opo")
def _opo(
    r: list[float], group_ids: Sequence[int], lengths: Sequence[int], epsilon: float, norm: bool
) -> list[float]:
    """Less the group's mean weighted by response length (the optimal baseline of OPO)."""
    groups = _groups(group_ids)
    out = list(r)
    for members in groups.values():
        if len(members) > 1:
            total = sum(lengths[i] for i in members)
            base = sum(lengths[i] * r[i] for i in members) / max(1, total)
            for i in members:
                out[i] = r[i] - base
        else:
            out[members[0]] = r[members[0]]
    return out


@sequence_estimator("gpg")
def _gpg(
    r: list[float], group_ids: Sequence[int], lengths: Sequence[int], epsilon: float, norm: bool
) -> list[float]:
    """The group-centred reward times the batch size over its non-zero rewards."""
    groups = _groups(group_ids)
    out = list(r)
    alpha = len(r) / max(1, sum(1 for x in r if x != 0))
    for members in groups.values():
        mean = statistics.fmean(r[i] for i in members) if len(members) > 1 else 0.0
        for i in members:
            out[i] = alpha * (r[i] - mean)
    return out


@sequence_estimator("grpo_passk")
def _grpo_passk(
    r: list[float], group_ids: Sequence[int], lengths: Sequence[int], epsilon: float, norm: bool
) -> list[float]:
    """Pass@k: only the group's best answer is pushed, by its lead over the second best."""
    groups = _groups(group_ids)
    out = [0.0] * len(r)
    for gid, members in groups.items():
        if len(members) < 2:
            raise ValueError(f"grpo_passk needs at least 2 samples per group; group {gid} has {len(members)}")
        values = torch.tensor([r[i] for i in members])
        top, where = torch.topk(values, 2)
        lead = float(top[0] - top[1])
        if norm:
            lead /= float(values.std()) + epsilon
        out[members[int(where[0])]] = lead
    return out


@token_estimator("reinforce_plus_plus")
def _reinforce_pp(
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: Sequence[int],
    gamma: float,
    baselines: Sequence[float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted returns, whitened over the batch."""
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0])
    for t in reversed(range(token_rewards.shape[1])):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t] + running * (1 - mask[:, t])
        returns[:, t] = running * mask[:, t]
    return masked_whiten(returns, mask) * mask, returns


@token_estimator("reinforce_plus_plus_baseline")
def _reinforce_pp_baseline(
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: Sequence[int],
    gamma: float,
    baselines: Sequence[float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The group-centred score on every token, whitened over the batch."""
    groups = _groups(group_ids)
    scores = token_rewards.sum(-1)
    centred = scores.clone()
    for members in groups.values():
        if len(members) > 1:
            centred[members] = scores[members] - scores[members].mean()
    returns = centred.unsqueeze(-1) * mask
    return masked_whiten(returns, mask) * mask, returns


@token_estimator("remax")
def _remax(
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: Sequence[int],
    gamma: float,
    baselines: Sequence[float] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns less the reward of a greedy answer to the same prompt."""
    if baselines is None:
        raise ValueError("remax needs the reward of a greedy answer per sample (baselines)")
    returns = (token_rewards * mask).flip(-1).cumsum(-1).flip(-1)
    return returns - torch.tensor(list(baselines), dtype=returns.dtype).unsqueeze(-1) * mask, returns


def sequence_advantages(
    name: str,
    rewards: Sequence[float],
    group_ids: Sequence[int],
    lengths: Sequence[int],
    *,
    epsilon: float = 1e-6,
    norm_by_std: bool = True,
) -> list[float]:
    """One advantage per sample for the estimator ``name`` (one of :data:`SEQUENCE`)."""
    if name not in SEQUENCE:
        raise ValueError(f"{name!r} is not a per-sequence advantage estimator ({', '.join(SEQUENCE)})")
    return SEQUENCE[name]([float(x) for x in rewards], group_ids, lengths, epsilon, norm_by_std)


def token_advantages(
    name: str,
    token_rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_ids: Sequence[int],
    gamma: float = 1.0,
    baselines: Sequence[float] | None = None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-token advantages and returns for the estimator ``name`` (one of :data:`TOKEN`), from
    ``token_rewards`` ``(batch, width)`` over ``mask``; ``baselines`` (``remax``): the reward of
    each sample's greedy answer."""
    if name not in TOKEN:
        raise ValueError(f"{name!r} is not a per-token advantage estimator ({', '.join(TOKEN)})")
    adv, returns = TOKEN[name](token_rewards, mask, group_ids, gamma, baselines)
    lengths = mask.sum(-1).long().tolist()
    return (
        [adv[i, :n].tolist() for i, n in enumerate(lengths)],
        [returns[i, :n].tolist() for i, n in enumerate(lengths)],
    )
