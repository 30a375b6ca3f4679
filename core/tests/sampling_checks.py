"""Checks of the seeding rule (:mod:`rlport.rollout.seeding`) on a real engine, shared by the HF
engine's tests and the vLLM engine's: copies of one prompt in one call are independent draws, a call
repeated with the same seed repeats its samples, consecutive training steps draw other samples, and a
batch split into slices at their ``prompt_offset`` samples exactly as the whole batch."""

from __future__ import annotations

from typing import Any

from rlport.rollout import SamplingParams
from rlport.rollout.seeding import step_seed

COPIES = 8
N = 4
TOKENS = 8
RUN_SEED = 3

Groups = list[list[tuple[int, ...]]]


def sample(engine: Any, prompts: list[list[int]], seed: int | None, offset: int = 0) -> Groups:
    """Per prompt, its ``N`` sampled token sequences at temperature 1."""
    params = SamplingParams(n=N, temperature=1.0, max_new_tokens=TOKENS, seed=seed, prompt_offset=offset)
    return [[tuple(g.token_ids) for g in gens] for gens in engine.generate(prompts, params)]


def check_copies_independent(engine: Any, prompt: list[int]) -> None:
    """``COPIES`` copies of one prompt in one seeded call: no two copies share a sample, and each
    copy's samples differ from one another."""
    groups = sample(engine, [prompt] * COPIES, step_seed(RUN_SEED, 0))
    assert [len(g) for g in groups] == [N] * COPIES
    assert len({tuple(g) for g in groups}) == COPIES, "copies of one prompt got identical sample groups"
    assert all(len(set(g)) > 1 for g in groups), "the samples of one copy are all alike"
    flat = [s for g in groups for s in g]
    assert len(set(flat)) >= len(flat) * 3 // 4, f"only {len(set(flat))} distinct of {len(flat)} samples"


def check_unseeded_copies_independent(engine: Any, prompt: list[int]) -> None:
    """Without a seed the engine's own generator draws: copies still differ, and so do two calls."""
    first = sample(engine, [prompt] * COPIES, None)
    assert len({tuple(g) for g in first}) == COPIES
    assert sample(engine, [prompt] * COPIES, None) != first


def check_step_reproducible(engine: Any, prompts: list[list[int]]) -> None:
    """The same step of the same run samples the same; the next step and another run do not repeat a
    single sample of it."""
    first = sample(engine, prompts, step_seed(RUN_SEED, 5))
    assert sample(engine, prompts, step_seed(RUN_SEED, 5)) == first
    flat = {s for g in first for s in g}
    for other in (step_seed(RUN_SEED, 6), step_seed(RUN_SEED + 1, 5)):
        again = {s for g in sample(engine, prompts, other) for s in g}
        assert len(flat & again) <= len(flat) // 4, f"{len(flat & again)} of {len(flat)} samples repeated"


def check_split_equals_whole(engine: Any, prompts: list[list[int]]) -> None:
    """Two slices of a batch, each at its ``prompt_offset``, sample what the whole batch samples."""
    seed = step_seed(RUN_SEED, 2)
    half = len(prompts) // 2
    whole = sample(engine, prompts, seed)
    assert sample(engine, prompts[:half], seed) + sample(engine, prompts[half:], seed, offset=half) == whole
    assert sample(engine, prompts[half:], seed) != whole[half:]  # the offset matters
