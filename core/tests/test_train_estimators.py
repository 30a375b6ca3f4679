"""``algorithm.adv_estimator`` beside GRPO and GAE: rloo, opo, gpg, grpo_passk,
reinforce_plus_plus, reinforce_plus_plus_baseline and remax equal verl's own estimator functions on
random batches, by hand on small ones, and each trains the demo end to end."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import pytest
import torch
from demo_runs import metrics, run_demo
from verl_source import verl_functions

from rlport.errors import ConfigError
from rlport.train.algos.estimators import sequence_advantages, token_advantages
from rlport.train.algos.masked import response_mask
from rlport.train.algos.ppo import token_scores
from rlport.train.cli import build_config
from rlport.train.config.choices import GROUPED_ESTIMATORS, PER_TOKEN_ESTIMATORS

VERL_NAMES = {
    "rloo": "compute_rloo_outcome_advantage",
    "opo": "compute_opo_outcome_advantage",
    "gpg": "compute_gpg_outcome_advantage",
    "grpo": "compute_grpo_outcome_advantage",
    "grpo_passk": "compute_grpo_passk_outcome_advantage",
    "reinforce_plus_plus": "compute_reinforce_plus_plus_outcome_advantage",
    "reinforce_plus_plus_baseline": "compute_reinforce_plus_plus_baseline_outcome_advantage",
    "remax": "compute_remax_outcome_advantage",
}


def _verl() -> dict[str, Any]:
    helpers = verl_functions(
        "verl/utils/torch_functional.py",
        ("masked_sum", "masked_mean", "masked_var", "masked_whiten"),
        {"torch": torch},
    )
    names = type("AdvantageEstimator", (), {k.upper(): k for k in VERL_NAMES})
    return verl_functions(
        "verl/trainer/ppo/core_algos.py",
        tuple(VERL_NAMES.values()),
        {
            "torch": torch,
            "np": np,
            "defaultdict": defaultdict,
            "Optional": Optional,
            "Any": Any,
            "AlgoConfig": Any,
            "verl_F": SimpleNamespace(**helpers),
            "AdvantageEstimator": names,
            "register_adv_est": lambda name: lambda fn: fn,
        },
    )


def _batch(seed: int) -> tuple[list[float], list[int], list[int], torch.Tensor, torch.Tensor]:
    """Four groups of 4 answers (scores 0, 0.5 or 1, some groups alike), ragged lengths, and the
    token rewards: the score on the last token less a small KL penalty on every token."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randint(0, 3, (16,), generator=g) / 2).tolist()
    scores[4:8] = [1.0] * 4  # a group without signal
    groups = [i // 4 for i in range(16)]
    lengths = torch.randint(1, 9, (16,), generator=g).tolist()
    mask = response_mask(lengths)
    token_rewards = token_scores(scores, mask) - 0.01 * torch.rand(mask.shape, generator=g) * mask
    return scores, groups, lengths, mask, token_rewards


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", [*GROUPED_ESTIMATORS, *PER_TOKEN_ESTIMATORS])
def test_advantages_equal_verls(name: str, seed: int) -> None:
    _, groups, lengths, mask, token_rewards = _batch(seed)
    fn = _verl()[VERL_NAMES[name]]
    config = SimpleNamespace(gamma=0.95, get=lambda key, default=None: default)
    kwargs: dict[str, Any] = {"index": np.array(groups), "config": config}
    baselines = None
    if name == "remax":
        baselines = torch.rand(16, generator=torch.Generator().manual_seed(seed + 9)).tolist()
        kwargs["reward_baselines"] = torch.tensor(baselines)
    want, _ = fn(token_level_rewards=token_rewards.clone(), response_mask=mask, **kwargs)
    if name in GROUPED_ESTIMATORS:
        got = sequence_advantages(name, token_rewards.sum(-1).tolist(), groups, lengths)
        assert got == pytest.approx(want[:, 0].tolist(), rel=1e-5, abs=1e-6)
    else:
        rows, _ = token_advantages(
            name, token_rewards, mask, group_ids=groups, gamma=0.95, baselines=baselines
        )
        for i, n in enumerate(lengths):
            assert rows[i] == pytest.approx(want[i, :n].tolist(), rel=1e-5, abs=1e-6), (name, i)


def test_estimators_by_hand() -> None:
    """One group of 3 with rewards 1, 0, 0 (lengths 1, 2, 3)."""
    r, g, n = [1.0, 0.0, 0.0], [0, 0, 0], [1, 2, 3]
    assert sequence_advantages("rloo", r, g, n) == pytest.approx([1.0, -0.5, -0.5])  # r - mean of the others
    assert sequence_advantages("opo", r, g, n) == pytest.approx(
        [1 - 1 / 6, -1 / 6, -1 / 6]
    )  # length-weighted mean
    assert sequence_advantages("gpg", r, g, n) == pytest.approx([3 * (2 / 3), 3 * (-1 / 3), 3 * (-1 / 3)])
    lead = sequence_advantages("grpo_passk", r, g, n, norm_by_std=False)
    assert lead == [1.0, 0.0, 0.0]  # the best answer, by its lead over the second best
    with pytest.raises(ValueError, match="at least 2 samples per group"):
        sequence_advantages("grpo_passk", [1.0], [0], [1])
    mask = response_mask([2])
    rewards = torch.tensor([[0.0, 1.0]])
    adv, ret = token_advantages("remax", rewards, mask, group_ids=[0], baselines=[0.25])
    assert ret == [[1.0, 1.0]] and adv == [[0.75, 0.75]]  # returns less the greedy answer's reward
    _, ret = token_advantages("reinforce_plus_plus", rewards, mask, group_ids=[0], gamma=0.5)
    assert ret == [[0.5, 1.0]]  # discounted returns (then whitened over the batch)


def test_grouped_estimators_need_groups() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(["algorithm.adv_estimator=rloo", "rollout.n=1"], demo=True)
    assert "at least 2 with algorithm.adv_estimator=rloo" in err.value.message
    assert build_config(["algorithm.adv_estimator=remax", "rollout.n=1"], demo=True).rollout.n == 1
    with pytest.raises(ConfigError) as err:
        build_config(["algorithm.adv_estimator=dapo"], demo=True)
    assert "'algorithm.adv_estimator' is 'dapo'" in err.value.message and "rloo" in err.value.message


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        *((n, ()) for n in ("rloo", "opo", "grpo_passk", *PER_TOKEN_ESTIMATORS)),
        ("gpg", ("algorithm.policy_loss=gpg",)),  # verl's GPG recipe: its estimator and its loss
        (
            "grpo",
            ("algorithm.policy_loss=gspo", "algorithm.clip_ratio_low=3e-4", "algorithm.clip_ratio_high=4e-4"),
        ),
        # the KL in the reward puts the engine to sleep to compute reference logprobs: ReMax's
        # greedy answers must be drawn before (once they failed with "generate() while asleep")
        ("remax", ("algorithm.use_kl_in_reward=true",)),
    ],
)
def test_each_estimator_trains_the_demo(name: str, extra: tuple[str, ...], tmp_path: Path) -> None:
    rows = metrics(run_demo(tmp_path / "run", "trainer.steps=2", f"algorithm.adv_estimator={name}", *extra))
    assert [r["step"] for r in rows] == [1, 2] and all("actor/pg_loss" in r for r in rows)
    assert rows[1]["rollout/logprob_mismatch"] < 1e-4  # the update reached the engine
    if name == "remax":
        assert 0.0 <= rows[0]["reward/greedy_baseline_mean"] <= 1.0


def test_every_estimator_the_config_accepts_is_registered_once() -> None:
    """One registry, as verl's register_adv_est: the names algorithm.adv_estimator accepts are the
    registered ones (gae is PPO's, with the critic), each in exactly one of the two kinds."""
    from rlport.train.algos.estimators import SEQUENCE, TOKEN
    from rlport.train.config.choices import ADV_ESTIMATORS, GROUPED_ESTIMATORS, PER_TOKEN_ESTIMATORS

    assert set(SEQUENCE) == set(GROUPED_ESTIMATORS) and set(TOKEN) == set(PER_TOKEN_ESTIMATORS)
    assert not set(SEQUENCE) & set(TOKEN)
    assert set(ADV_ESTIMATORS) == {"gae", *SEQUENCE, *TOKEN}
