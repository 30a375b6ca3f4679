"""Validation: the greedy reward on ``data.val_files``, per data source, as verl reports it.

Each validation prompt is answered once at temperature 0 (verl's ``val_kwargs``: greedy, one
sample) by the workers' engines, which hold the current policy; the responses are scored with the
same rules as training. Metrics are ``val/reward/mean`` and ``val/<data_source>/reward/mean``.
"""

from __future__ import annotations

import statistics
from typing import Any

from rlport.rollout.protocol import SamplingParams
from rlport.train.batching import generate_calls, shards
from rlport.train.data import Example


def greedy_params(max_new_tokens: int, stop_ids: list[int], seed: int) -> SamplingParams:
    return SamplingParams(
        n=1,
        temperature=0.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        stop_token_ids=stop_ids,
        seed=seed,
    )


def validate_policy(
    pool: Any, examples: list[Example], *, tokenizer: Any, rewards: Any, params: SamplingParams
) -> dict[str, float]:
    """The greedy reward of the pool's current policy on ``examples`` (at least one per worker)."""
    parts = shards(examples, pool.world)
    outs = pool.call("generate", generate_calls(parts, params))
    by_source: dict[str, list[float]] = {}
    for part, (groups, _) in zip(parts, outs, strict=True):
        for ex, group in zip(part, groups, strict=True):
            token_ids = group[0][0]
            text = tokenizer.decode(token_ids, skip_special_tokens=True)
            score = rewards.score(ex.data_source, text, ex.ground_truth, ex.extra_info)
            by_source.setdefault(ex.data_source, []).append(score)
    scores = [s for v in by_source.values() for s in v]
    m = {"val/reward/mean": statistics.fmean(scores)}
    for source, values in sorted(by_source.items()):
        m[f"val/{source}/reward/mean"] = statistics.fmean(values)
    return m
