"""The workers' answers, generated, decoded and scored: the one rollout-and-score function the step,
ReMax's greedy baseline and validation share (:func:`rollout_and_score`). Every answer comes back
with its prompt, its place in the prompt's group, its tokens, its text and its reward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlport.rollout.protocol import SamplingParams
from rlport.train.data.prompts import Example
from rlport.train.driver.batching import generate_calls
from rlport.train.tracking.timer import timed


@dataclass(frozen=True)
class Answer:
    example: Example
    #: the answer's place among the prompt's ``rollout.n`` samples
    sample: int
    token_ids: list[int]
    logprobs: Any
    text: str
    score: float
    #: the reward function's extra information (only when asked: validation reports it)
    extra: dict[str, Any] = field(default_factory=dict)


def decode_and_score(
    parts: list[list[Example]], outs: list[Any], *, tokenizer: Any, rewards: Any, extra: bool = False
) -> list[list[list[Answer]]]:
    """Per worker, per prompt, per sample: each answer decoded and scored by its data source's
    reward (with the reward's extra information when ``extra``)."""
    out: list[list[list[Answer]]] = []
    for part, (groups, _) in zip(parts, outs, strict=True):
        per_prompt = []
        for ex, group in zip(part, groups, strict=True):
            answers = []
            for k, (token_ids, logprobs, _finish) in enumerate(group):
                text = tokenizer.decode(token_ids, skip_special_tokens=True)
                if extra:
                    result = rewards.result(ex.data_source, text, ex.ground_truth, ex.extra_info)
                    score, info = result.score, dict(result.extra)
                else:
                    score, info = rewards.score(ex.data_source, text, ex.ground_truth, ex.extra_info), {}
                answers.append(Answer(ex, k, token_ids, logprobs, text, score, info))
            per_prompt.append(answers)
        out.append(per_prompt)
    return out


@dataclass(frozen=True)
class Rolled:
    """One rollout of the workers: per worker, per prompt, per sample, the scored answers; and the
    seconds the slowest worker's engine spent generating (``time/generate``)."""

    answers: list[list[list[Answer]]]
    generate_seconds: float

    def scores(self) -> list[float]:
        """Every answer's reward, in order (worker, prompt, sample)."""
        return [a.score for prompts in self.answers for group in prompts for a in group]


def rollout_and_score(
    pool: Any,
    parts: list[list[Example]],
    params: SamplingParams,
    *,
    tokenizer: Any,
    rewards: Any,
    start: int = 0,
    extra: bool = False,
    timings: dict[str, float] | None = None,
) -> Rolled:
    """Each worker answers its part of the prompts (``parts[w]``, drawn with ``params``, each
    prompt's seed offset by its position from ``start``), then every answer is decoded and scored
    (:func:`decode_and_score`). With ``timings``, the phases ``rollout`` (generating) and ``reward``
    (decoding and scoring) are timed into it."""
    timings = {} if timings is None else timings
    with timed("rollout", timings):
        outs = pool.call("generate", generate_calls(parts, params, start))
    with timed("reward", timings):
        scored = decode_and_score(parts, outs, tokenizer=tokenizer, rewards=rewards, extra=extra)
    return Rolled(scored, max(o[1]["time/generate"] for o in outs))
