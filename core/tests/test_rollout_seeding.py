"""The seeding rule (:mod:`rlport.rollout.seeding`): its seeds, the trainer's use of it, and the HF
engine following it (the vLLM engine's tests run the same checks in ``vllm_engine/``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sampling_checks as checks
import torch

from rlport.rollout import EngineConfig, SamplingParams
from rlport.rollout.hf_engine import HFEngine, create, inverse_cdf
from rlport.rollout.seeding import SEED_BITS, derive_seed, sample_seed, sample_seeds, step_seed
from rlport.rollout.tiny import build_tiny_model

PROMPTS = [[1, 49, 20, 27, 30], [1, 5, 6], [1, 70, 71, 72, 73, 74, 75], [1, 8, 9, 10]]


def test_seeds_are_stable_distinct_and_in_range() -> None:
    assert step_seed(0, 0) == step_seed(0, 0)
    assert step_seed(0, 0) != step_seed(0, 1) != step_seed(1, 0)
    assert derive_seed("x", 1, 23) != derive_seed("x", 12, 3)  # no concatenation ambiguity
    assert derive_seed("step", 1, 2) != derive_seed("sample", 1, 2)  # labels separate the uses
    seeds = {
        sample_seed(step_seed(r, t), i, j)
        for r in range(3)
        for t in range(50)
        for i in range(16)
        for j in range(8)
    }
    assert len(seeds) == 3 * 50 * 16 * 8
    assert all(0 <= s < 2**SEED_BITS for s in seeds)
    assert step_seed(-5, 10**30) >= 0  # any integers in, a valid seed out


def test_sample_seeds_follow_prompt_offset() -> None:
    params = SamplingParams(n=3, seed=42)
    whole = sample_seeds(params, 4)
    assert [len(row) for row in whole] == [3, 3, 3, 3]
    assert whole[0][1] == sample_seed(42, 0, 1)
    assert sample_seeds(replace(params, prompt_offset=2), 2) == whole[2:]
    assert len({s for row in whole for s in row}) == 12
    with pytest.raises(ValueError, match=r"SamplingParams\.seed"):
        sample_seeds(SamplingParams(n=2), 1)


def test_consecutive_steps_share_no_seed_unlike_seed_plus_index() -> None:
    """What vLLM does with one seed per request (sample j gets seed + j, the old trainer seed being
    run_seed * 1_000_003 + step) reuses 7 of 8 seeds from one step to the next; the rule reuses none."""
    n = 8
    old = [{1_000_003 * 0 + step + j for j in range(n)} for step in (4, 5)]
    assert len(old[0] & old[1]) == n - 1
    new = [
        {s for row in sample_seeds(SamplingParams(n=n, seed=step_seed(0, t)), 16) for s in row}
        for t in (4, 5)
    ]
    assert len(new[0]) == 16 * n and not new[0] & new[1]


def test_inverse_cdf_is_an_exact_draw_and_skips_zero_probability() -> None:
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25, 0.0]])
    grid = (torch.arange(1000) + 0.5) / 1000
    chosen = inverse_cdf(probs.expand(1000, -1), grid)
    assert torch.bincount(chosen, minlength=6).tolist() == [0, 500, 0, 250, 250, 0]
    edge = torch.tensor([0.0, 1.0 - 2**-24])
    assert inverse_cdf(probs.expand(2, -1) * 0.9999999, edge).tolist() == [1, 4]


def test_trainer_gives_each_worker_its_prompt_offset(tmp_path: Path) -> None:
    from rlport.train.cli import build_config
    from rlport.train.data.sharding import shards as _split
    from rlport.train.driver.trainer import Trainer

    cfg = build_config(
        ["trainer.progress=false", f"trainer.output_dir={tmp_path}", "trainer.seed=4"], demo=True
    )
    trainer = Trainer(cfg)
    batch = trainer.examples[:16]

    def seeds(step: int, world: int) -> list[int]:
        calls = trainer.rollout_calls(_split(batch, world), step)
        return [s for prompts, params in calls for row in sample_seeds(params, len(prompts)) for s in row]

    assert [p.prompt_offset for _, p in trainer.rollout_calls(_split(batch, 4), 0)] == [0, 4, 8, 12]
    assert seeds(0, 1) == seeds(0, 2) == seeds(0, 4)  # however the batch is split
    assert len(set(seeds(0, 2))) == 16 * cfg.rollout.n
    assert not set(seeds(0, 2)) & set(seeds(1, 2))
    assert trainer.rollout_calls([batch], 3)[0][1].seed == step_seed(4, 3)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HFEngine]:
    folder = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", vocab=None, initializer_range=0.2, seed=1
    )
    eng = create(EngineConfig(model=str(folder)))
    yield eng
    eng.shutdown()


def test_hf_copies_of_a_prompt_are_independent(engine: HFEngine) -> None:
    checks.check_copies_independent(engine, PROMPTS[0])
    checks.check_unseeded_copies_independent(engine, PROMPTS[0])


def test_hf_step_is_reproducible_and_steps_differ(engine: HFEngine) -> None:
    checks.check_step_reproducible(engine, PROMPTS)


def test_hf_split_batch_samples_as_whole(engine: HFEngine) -> None:
    checks.check_split_equals_whole(engine, PROMPTS)


def test_hf_sample_does_not_depend_on_its_batch(engine: HFEngine) -> None:
    """A sample's draws come from its own seed, so a prompt samples the same alone or in a batch."""
    seed = step_seed(0, 0)
    alone = checks.sample(engine, PROMPTS[2:3], seed, offset=2)
    assert checks.sample(engine, PROMPTS, seed)[2] == alone[0]
