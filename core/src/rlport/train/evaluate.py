"""Validation: the greedy reward on ``data.val_files``, per data source, as verl reports it.

Each validation prompt is answered once at temperature 0 (verl's ``val_kwargs``: greedy, one
sample) by the workers' engines, which hold the current policy; the responses are scored with the
same rules as training. Metrics are ``val/reward/mean`` and ``val/<data_source>/reward/mean``.

``trainer.log_val_generations=N`` keeps N of the answers (prompt, response, ground truth, score):
the same N prompts at every validation, drawn once with a fixed seed as verl draws them, so a
reader follows how one prompt's answer changes over the run.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
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


#: the seed of the draw of logged validation prompts (verl draws with 42 too)
SAMPLE_SEED = 42


def logged_indices(examples: list[Example], n: int) -> set[int]:
    """The ``Example.index`` of the ``n`` validation prompts whose answers are logged: the same at
    every validation of a run and of its resumption (a draw with a fixed seed, in file order)."""
    if n <= 0:
        return set()
    order = [e.index for e in examples]
    random.Random(SAMPLE_SEED).shuffle(order)
    return set(order[:n])


@dataclass
class Validation:
    metrics: dict[str, float]
    #: every answer, in file order: index, data_source, prompt, response, ground_truth, score
    samples: list[dict[str, Any]] = field(default_factory=list)


def validate_policy(
    pool: Any,
    examples: list[Example],
    *,
    tokenizer: Any,
    rewards: Any,
    params: SamplingParams,
) -> Validation:
    """The greedy reward of the pool's current policy on ``examples`` (at least one per worker),
    and every answer."""
    parts = shards(examples, pool.world)
    outs = pool.call("generate", generate_calls(parts, params))
    by_source: dict[str, list[float]] = {}
    samples: list[tuple[int, dict[str, Any]]] = []
    for part, (groups, _) in zip(parts, outs, strict=True):
        for ex, group in zip(part, groups, strict=True):
            token_ids = group[0][0]
            text = tokenizer.decode(token_ids, skip_special_tokens=True)
            score = rewards.score(ex.data_source, text, ex.ground_truth, ex.extra_info)
            by_source.setdefault(ex.data_source, []).append(score)
            row = {
                "index": ex.index,
                "data_source": ex.data_source,
                "prompt": tokenizer.decode(ex.prompt_ids, skip_special_tokens=True),
                "response": text,
                "ground_truth": ex.ground_truth,
                "score": float(score),
            }
            samples.append((ex.index, row))
    scores = [s for v in by_source.values() for s in v]
    m = {"val/reward/mean": statistics.fmean(scores)}
    for source, values in sorted(by_source.items()):
        m[f"val/{source}/reward/mean"] = statistics.fmean(values)
    return Validation(m, [row for _, row in sorted(samples, key=lambda t: t[0])])
