"""How a batch of prompts is split over the workers, and each worker's ``generate`` arguments."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rlport.rollout.protocol import SamplingParams
from rlport.train.data.prompts import Example


def shards(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` contiguous pieces whose sizes differ by at most one."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


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
