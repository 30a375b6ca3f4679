"""Each worker's ``generate`` arguments for its share of a batch (:func:`rlport.train.data.sharding.shards`)."""

from __future__ import annotations

from dataclasses import replace

from rlport.rollout.protocol import SamplingParams
from rlport.train.data.prompts import Example


def generate_calls(
    parts: list[list[Example]], params: SamplingParams, start: int = 0
) -> list[tuple[list[list[int]], SamplingParams]]:
    """Each worker's ``generate`` arguments: its prompts, and ``params`` with ``prompt_offset`` at
    its first prompt's batch position (after ``start`` prompts of earlier calls), so every sample
    of the batch has its own seed however the batch is split (:mod:`rlport.rollout.seeding`)."""
    calls, offset = [], start
    for part in parts:
        calls.append(([e.prompt_ids for e in part], replace(params, prompt_offset=offset)))
        offset += len(part)
    return calls
