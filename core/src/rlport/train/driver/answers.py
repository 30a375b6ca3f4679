"""The workers' answers, decoded and scored: the one loop the step, ReMax's greedy baseline and
validation share. ``outs`` are the workers' ``generate`` results for ``parts`` (each worker's
prompts); every answer comes back with its prompt, its place in the prompt's group, its tokens,
its text and its reward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlport.train.data.prompts import Example


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
