"""The step's advantages, for every ``algorithm.adv_estimator``, in one place.

:func:`estimate` takes the algorithm's own section (``cfg.algorithm``) and what the step produced:
each sample's score, response length and prompt group, and, where the estimator needs them, the
critic's values (``gae``), the per-token KL against the reference (``algorithm.use_kl_in_reward``)
and the greedy answers' rewards (``remax``). It returns one ``(R,)`` float32 tensor of advantages
per sample (a per-sequence estimator's value on each token) and, for ``gae``, the critic's returns.

The token rewards (the score on the last token, less the KL penalty) and GAE are
:func:`rlport.train.algos.ppo.advantages`; the critic-free estimators are the registries of
:mod:`rlport.train.algos.estimators`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlport.train.algos.estimators import SEQUENCE, TOKEN
from rlport.train.algos.masked import unpad_rows
from rlport.train.algos.ppo import FixedKL, advantages
from rlport.train.config.schema import AlgorithmConfig

__all__ = ["Estimated", "estimate"]


@dataclass
class Estimated:
    """Per sample, in order: ``(R,)`` advantages and, for ``gae``, ``(R,)`` returns; the metrics."""

    advantages: list[torch.Tensor]
    returns: list[torch.Tensor] | None
    metrics: dict[str, float] = field(default_factory=dict)


def estimate(
    al: AlgorithmConfig,
    scores: Sequence[float],
    lengths: Sequence[int],
    group_ids: Sequence[int],
    *,
    values: Sequence[torch.Tensor] | None = None,
    kl: Sequence[torch.Tensor] | None = None,
    kl_ctrl: FixedKL | None = None,
    baselines: Sequence[float] | None = None,
) -> Estimated:
    """The advantages of ``al.adv_estimator`` for one step's samples. ``values`` is required for
    ``gae``, ``kl`` and ``kl_ctrl`` with ``al.use_kl_in_reward``, ``baselines`` for ``remax``."""
    est = al.adv_estimator
    if est == "gae" and values is None:
        raise ValueError("algorithm.adv_estimator=gae needs the critic's values of every sample")
    res = advantages(
        scores,
        lengths,
        values=values if est == "gae" else None,
        kl=kl if al.use_kl_in_reward else None,
        kl_ctrl=kl_ctrl,
        gamma=al.gamma,
        lam=al.lam,
    )
    metrics = dict(res.metrics)
    if res.advantages is not None and res.returns is not None:  # gae
        return Estimated(res.advantages, res.returns, metrics)
    assert res.token_rewards is not None and res.mask is not None
    if est in TOKEN:
        if baselines is not None:
            metrics["reward/greedy_baseline_mean"] = statistics.fmean(baselines)
        adv, _returns = TOKEN[est](res.token_rewards, res.mask, group_ids, al.gamma, baselines)
        return Estimated(unpad_rows(adv, lengths), None, metrics)
    if est not in SEQUENCE:
        raise ValueError(
            f"algorithm.adv_estimator={est!r} is not an estimator ({', '.join(['gae', *SEQUENCE, *TOKEN])})"
        )
    per_sequence = SEQUENCE[est](
        [float(x) for x in res.sequence_rewards], group_ids, lengths, al.adv_epsilon, al.norm_adv_by_std
    )
    rows = [
        torch.full((n,), float(a), dtype=torch.float32) for a, n in zip(per_sequence, lengths, strict=True)
    ]
    return Estimated(rows, None, metrics)
