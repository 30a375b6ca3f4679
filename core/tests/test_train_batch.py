"""The step's batch: one Sample type whose advantages are always per token, handed to the workers
once, and a worker that refuses to train on what it did not prepare."""

from __future__ import annotations

import pytest
import torch

from rlport.train.algos.advantages import estimate
from rlport.train.config.schema import AlgorithmConfig
from rlport.train.data.batch import Sample, attach


def test_a_sequence_advantage_is_on_every_token_of_its_sample() -> None:
    s = Sample.scored([1, 2], [3, 4, 5], [0.0, 0.0, 0.0], 0.75, returns=[1.0, 2.0, 3.0])
    assert s.advantages is not None and s.advantages.dtype == torch.float32
    assert s.advantages.tolist() == [0.75, 0.75, 0.75]
    assert s.returns is not None and s.returns.tolist() == [1.0, 2.0, 3.0]


def test_attach_refuses_advantages_of_the_wrong_length() -> None:
    samples = [Sample([1], [2, 3], [0.0, 0.0]), Sample([1], [4], [0.0])]
    attach(samples, [torch.ones(2), torch.zeros(1)])
    assert [s.advantages.tolist() for s in samples if s.advantages is not None] == [[1.0, 1.0], [0.0]]
    with pytest.raises(ValueError, match=r"shape \(3,\) for a response of 2 tokens"):
        attach(samples, [torch.ones(3), torch.zeros(1)])


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_plus_plus", "remax", "gae"])
def test_every_estimator_gives_one_row_per_sample_of_its_length(estimator: str) -> None:
    al = AlgorithmConfig(adv_estimator=estimator)
    scores, lengths, groups = [1.0, 0.0, 0.5, 0.5], [3, 1, 2, 4], [0, 0, 1, 1]
    values = [torch.full((n,), 0.1) for n in lengths] if estimator == "gae" else None
    baselines = [0.5] * 4 if estimator == "remax" else None
    est = estimate(al, scores, lengths, groups, values=values, baselines=baselines)
    assert [tuple(a.shape) for a in est.advantages] == [(n,) for n in lengths]
    assert (est.returns is not None) == (estimator == "gae")
    if estimator in ("grpo", "rloo"):  # one value per sequence, on each of its tokens
        assert all(len(set(a.tolist())) == 1 for a in est.advantages)
        assert est.advantages[0][0] > 0 > est.advantages[1][0]  # the better answer of its group


def test_gae_without_values_is_refused() -> None:
    with pytest.raises(ValueError, match="critic's values"):
        estimate(AlgorithmConfig(adv_estimator="gae"), [1.0], [2], [0])


def test_a_worker_refuses_to_train_before_it_prepared(tmp_path: object) -> None:
    """The driver runs generate, prepare, train; a worker no longer runs prepare itself."""
    from rlport.train.cli import build_config
    from rlport.train.workers.worker import Worker

    cfg = build_config(["trainer.progress=false"], demo=True)
    w = Worker(cfg, actor_path=cfg.model.path)  # construction only: no model is loaded
    with pytest.raises(RuntimeError, match=r"train\(\) before Worker.prepare\(\)"):
        w.train([torch.zeros(1)])
