"""Validation: the reward on ``data.val_files``, per data source, as verl reports it.

Each validation prompt is answered by the workers' engines, which hold the current policy, as
``rollout.val_kwargs`` says (verl's ``val_kwargs``; by default greedy, one answer); the answers are
scored with the same rules as training. Metrics are ``val/reward/mean`` and
``val/<data_source>/reward/mean``, and with ``val_kwargs.n > 1`` ``.../best@n`` and ``.../worst@n``
(exact over the n answers); beside them verl's own names and values (``val-core/...``,
``val-aux/...``: :mod:`rlport.train.driver.val_metrics`), bootstrap estimates of best, worst and
majority vote included, so runs compare with verl's.

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
from rlport.train.data.prompts import Example
from rlport.train.data.sharding import shards
from rlport.train.driver.answers import Answer, rollout_and_score
from rlport.train.driver.val_metrics import validation_metrics


def validation_params(val: Any, max_new_tokens: int, stop_ids: list[int], seed: int) -> SamplingParams:
    """The sampling of ``rollout.val_kwargs`` (``val``): ``n`` answers per prompt, greedy unless
    ``do_sample`` (then its temperature, top_p and top_k), as verl's validation draws them."""
    sample = val.do_sample and val.temperature > 0
    return SamplingParams(
        n=val.n,
        temperature=val.temperature if sample else 0.0,
        top_p=val.top_p if sample else 1.0,
        top_k=val.top_k if sample else 0,
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
    batch_size: int = 0,
) -> Validation:
    """The validation reward of the pool's current policy on ``examples`` (at least one per
    worker), drawn with ``params``, and every answer. Each prompt's reward is the mean of its
    ``params.n`` answers; with ``n > 1`` also the best and the worst of them (``best@n``,
    ``worst@n``: exact over the n answers drawn). verl's metrics of the same answers are beside
    them: the reward and the reward function's extra information per answer, as
    :func:`rlport.train.driver.val_metrics.validation_metrics` names them."""
    per_prompt: dict[str, list[list[float]]] = {}
    samples: list[tuple[int, int, dict[str, Any]]] = []
    #: (index, sample, (data source, prompt, verl's variables of the answer))
    answers: list[tuple[int, int, tuple[str, int, dict[str, Any]]]] = []
    scored = _answers(pool, examples, params, batch_size, tokenizer=tokenizer, rewards=rewards)
    for prompts in scored:
        for group in prompts:
            ex = group[0].example
            prompt = tokenizer.decode(ex.prompt_ids, skip_special_tokens=True)
            for a in group:
                variables = {"reward": a.score}
                variables.update((key, value) for key, value in a.extra.items() if key != "reward")
                answers.append((ex.index, a.sample, (ex.data_source, ex.index, variables)))
                row = {
                    "index": ex.index,
                    "sample": a.sample,
                    "data_source": ex.data_source,
                    "prompt": prompt,
                    "response": a.text,
                    "ground_truth": ex.ground_truth,
                    "score": a.score,
                }
                samples.append((ex.index, a.sample, row))
            per_prompt.setdefault(ex.data_source, []).append([a.score for a in group])
    n = params.n
    every = [p for prompts in per_prompt.values() for p in prompts]
    m = _reward_metrics("val/reward", every, n)
    for source, prompts in sorted(per_prompt.items()):
        m.update(_reward_metrics(f"val/{source}/reward", prompts, n))
    m.update(validation_metrics(answer for _, _, answer in sorted(answers, key=lambda t: t[:2])))
    return Validation(m, [row for _, _, row in sorted(samples, key=lambda t: t[:2])])


def _answers(
    pool: Any,
    examples: list[Example],
    params: SamplingParams,
    batch_size: int,
    *,
    tokenizer: Any,
    rewards: Any,
) -> list[list[list[Answer]]]:
    """The workers' scored answers to ``examples``, ``batch_size`` prompts per call of the workers
    (0: all at once; verl's ``data.val_batch_size``), each call split over the workers. Every
    worker gets at least one prompt per call: a batch is at least one prompt per worker, and a last
    batch too small for that joins the one before it. Each prompt keeps its seed, its position in
    ``examples``, so the answers are the same however they are batched."""
    size = max(batch_size or len(examples), pool.world)
    starts = list(range(0, len(examples), size))
    if len(starts) > 1 and len(examples) - starts[-1] < pool.world:
        starts.pop()
    ends = [*starts[1:], len(examples)]
    out: list[list[list[Answer]]] = []
    for start, end in zip(starts, ends, strict=True):
        parts = shards(examples[start:end], pool.world)
        rolled = rollout_and_score(
            pool, parts, params, tokenizer=tokenizer, rewards=rewards, start=start, extra=True
        )
        out.extend(rolled.answers)
    return out


def _reward_metrics(prefix: str, prompts: list[list[float]], n: int) -> dict[str, float]:
    """``PREFIX/mean`` over every answer; with n > 1 ``PREFIX/best@n`` and ``PREFIX/worst@n``, the
    mean over prompts of the best and the worst of their answers."""
    out = {f"{prefix}/mean": statistics.fmean(s for scores in prompts for s in scores)}
    if n > 1:
        out[f"{prefix}/best@{n}"] = statistics.fmean(max(scores) for scores in prompts)
        out[f"{prefix}/worst@{n}"] = statistics.fmean(min(scores) for scores in prompts)
    return out
