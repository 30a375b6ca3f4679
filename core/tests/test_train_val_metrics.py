"""Validation metrics as verl computes and names them: mean@N, std@N and the bootstrap
best@K / worst@K / maj@K per data source and variable equal verl's ``process_validation_metrics``
on random answers, with its val-core / val-aux split; majority voting by hand; and a demo run with
sampled validation answers logs them."""

from __future__ import annotations

import itertools
import json
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from demo_runs import demo_config, metrics, run_demo
from verl_source import verl_functions, verl_method

from rlport.train.driver.val_metrics import (
    bootstrap_indices,
    majority_values,
    per_source_metrics,
    prompt_metrics,
    subset_sizes,
    validation_metrics,
)

Answers = list[tuple[str, str, dict[str, Any]]]


def _verl() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """verl's process_validation_metrics, calc_maj_val and the trainer's naming of the metrics."""
    fns = verl_functions(
        "verl/trainer/ppo/metric_utils.py",
        ("bootstrap_metric", "calc_maj_val", "process_validation_metrics"),
        {"np": np, "defaultdict": defaultdict, "partial": partial, "Any": Any, "Callable": Callable},
    )
    update = verl_method(
        "verl/trainer/ppo/ray_trainer.py",
        "RayPPOTrainer",
        "_val_metrics_update",
        {"np": np, "process_validation_metrics": fns["process_validation_metrics"]},
    )

    def named(sources: list[str], uids: list[str], infos: dict[str, list[Any]]) -> dict[str, float]:
        return update(None, np.array(sources, dtype=object), uids, infos, [])

    return fns["process_validation_metrics"], fns["calc_maj_val"], named


def _answers(seed: int) -> Answers:
    """Random answers: three sources, prompts of 1 to 9 answers; binary and fractional rewards;
    ``acc`` on two sources only (one answer without it); ``pred`` from a few values, missing for
    some answers (that prompt then has no majority vote)."""
    rng = random.Random(seed)
    out: Answers = []
    for p in range(14):
        source = ("openai/gsm8k", "lighteval/MATH", "rlport/repeat_letter")[p % 3]
        n = (1, 2, 3, 4, 5, 8, 9)[p % 7]
        for a in range(n):
            reward = float(rng.random() < 0.4) if p % 2 else round(rng.random(), 3)
            acc = None if source == "rlport/repeat_letter" or (p == 4 and a == 1) else reward > 0.5
            pred = None if (p == 7 and a == 0) else rng.choice("7785")
            out.append((source, f"prompt{p}", {"reward": reward, "acc": acc, "pred": pred, "note": "x"}))
    return out


def _columns(answers: Answers) -> tuple[list[str], list[str], dict[str, list[Any]]]:
    """verl's inputs: data sources, prompt uids, and per variable one value per answer."""
    infos: dict[str, list[Any]] = defaultdict(list)
    for _, _, variables in answers:
        for k, v in variables.items():
            infos[k].append(v)
    return [a[0] for a in answers], [a[1] for a in answers], dict(infos)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_verls(seed: int) -> None:
    process, _, named = _verl()
    answers = _answers(seed)
    expected = process(*_columns(answers))
    got = per_source_metrics(answers)
    assert sorted(got) == sorted(expected)
    for source, variables in expected.items():
        assert sorted(got[source]) == sorted(variables)  # reward and acc; pred and note are text
        for var, values in variables.items():
            assert got[source][var] == pytest.approx(dict(values), rel=1e-12, abs=1e-15), (source, var)
    verl_named = named(*_columns(answers))
    ours = validation_metrics(answers)
    assert sorted(ours) == sorted(verl_named)
    assert ours == pytest.approx({k: float(v) for k, v in verl_named.items()}, rel=1e-12, abs=1e-15)
    # what the split gives: acc is the headline where a source has it, else the reward
    assert "val-core/openai/gsm8k/acc/mean@9" in ours and "val-aux/openai/gsm8k/reward/mean@9" in ours
    assert "val-core/rlport/repeat_letter/reward/best@8/mean" in ours
    assert "val-aux/rlport/repeat_letter/reward/worst@8/mean" in ours
    assert any(k.startswith("val-core/") and "/maj@" in k for k in ours)


def test_subset_sizes_are_verls_schedule() -> None:
    assert [subset_sizes(n) for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [
        [], [2], [2, 3], [2, 4], [2, 4, 5], [2, 4, 8], [2, 4, 8, 9], [2, 4, 8, 16],
    ]  # fmt: skip


def test_majority_vote_by_hand() -> None:
    """The value of the first answer of the draw holding the most common pred; a tie goes to
    the pred drawn first; the same as verl's calc_maj_val on every draw."""
    _, calc_maj_val, _ = _verl()
    preds = ["A", "B", "A", "C"]
    values = np.array([1.0, 0.0, 0.5, 0.25])
    idx = np.array([[0, 1, 2], [1, 1, 0], [2, 1, 0], [1, 2, 0], [3, 1, 3], [1, 3, 2]])
    # A,B,A -> A first at 0; B,B,A -> B; A,B,A -> A first drawn at answer 2; B,A,A -> A at answer
    # 2; C,B,C -> C; B,C,A -> a tie of three, B drawn first
    assert majority_values(values, preds, idx).tolist() == [1.0, 0.0, 0.5, 0.5, 0.25, 0.0]
    for row in idx:
        draw = [{"pred": preds[i], "val": values[i]} for i in row]
        assert majority_values(values, preds, row[None, :])[0] == calc_maj_val(draw, "pred", "val")


def _exact_majority(values: list[float], preds: list[str], k: int) -> float:
    """The expected value of the majority answer over every ordered draw of k answers with
    replacement, each equally likely: the quantity maj@k's bootstrap estimates."""
    total = 0.0
    for draw in itertools.product(range(len(values)), repeat=k):
        counts = Counter(preds[i] for i in draw)
        top = max(counts.values())
        first = next(i for i in draw if counts[preds[i]] == top)
        total += values[first]
    return total / len(values) ** k


def test_majority_at_k_estimates_the_vote() -> None:
    """A prompt of four answers, two right ("7") and two wrong ones that disagree: the majority
    of 4 answers is right more often than one answer is (maj@4 > mean@4); best@K and worst@K bound
    it; over 20 seeds the bootstrap averages to the exact expectation."""
    values, preds = [1.0, 1.0, 0.0, 0.0], ["7", "7", "5", "9"]
    m = prompt_metrics(values, preds)
    assert m["mean@4"] == 0.5 and m["std@4"] == 0.5
    for k in (2, 4):
        assert m[f"worst@{k}/mean"] <= m[f"maj@{k}/mean"] <= m[f"best@{k}/mean"]
        seeds = [
            majority_values(np.array(values), preds, bootstrap_indices(4, k, seed=s)).mean()
            for s in range(20)
        ]
        # 20 x 1000 draws: a standard error of 0.0035
        assert statistics.fmean(seeds) == pytest.approx(_exact_majority(values, preds, k), abs=0.015), k
    # by hand: of 4 draws, "7" wins with 3 or 4 of them (5/16), or with 2 unless the other two
    # agree and one of those is drawn first (6/16 x 3/4); with 2 draws the first drawn wins
    assert _exact_majority(values, preds, 4) == 9.5 / 16 and _exact_majority(values, preds, 2) == 0.5
    assert m["maj@4/mean"] > m["mean@4"]  # the vote is worth having here
    # best@k of a right/wrong prompt: at least one of k draws right, 1 - (1/2)^k
    assert m["best@4/mean"] == pytest.approx(1 - 0.5**4, abs=0.05)
    assert "maj@2/mean" not in prompt_metrics(values, ["7", None, "5", "9"])  # a missing pred: no vote


def test_bootstrap_draws_are_verls_seeded_draws() -> None:
    """verl reseeds numpy's global generator with 42 before each statistic: the draws are those of
    a fresh legacy generator seeded with 42, whatever the global state was."""
    np.random.seed(7)
    np.random.random(5)
    np.random.seed(42)
    verl_draws = np.random.choice(5, size=(1000, 4), replace=True)
    assert np.array_equal(bootstrap_indices(5, 4), verl_draws)
    assert not np.array_equal(bootstrap_indices(5, 4), bootstrap_indices(5, 4, seed=43))


REWARD = """
from rlport.train.data.rewards import repeat_letter_reward


def compute_score(data_source, solution_str, ground_truth, extra_info):
    letters = [c for c in solution_str if not c.isspace()]
    score = repeat_letter_reward(data_source, solution_str, ground_truth, extra_info)
    return {"score": score, "pred": letters[0] if letters else ""}
"""


def test_demo_logs_verls_validation_metrics(tmp_path: Path) -> None:
    """Two demo steps, validated after the last with four sampled answers per prompt and a reward
    function returning verl's dict (score and pred): metrics.jsonl has verl's names, and their
    values are verl's on the dumped answers."""
    _, _, named = _verl()
    reward = tmp_path / "letter_reward.py"
    reward.write_text(REWARD)
    test_file = Path(demo_config(tmp_path / "demo").data.train_files[0]).with_name("test.parquet")
    res = run_demo(
        tmp_path / "run",
        "trainer.steps=2",
        f"data.val_files=[{test_file}]",
        "trainer.test_freq=2",
        "rollout.val_kwargs.do_sample=true",
        "rollout.val_kwargs.temperature=1.0",
        "rollout.val_kwargs.n=4",
        f"custom_reward_function.path={reward}",
        f"trainer.validation_data_dir={tmp_path / 'val'}",
    )
    (row,) = [r for r in metrics(res) if "val/reward/mean" in r]
    assert row["step"] == 2
    source = "rlport/repeat_letter"
    for key in ("mean@4", "best@4/mean", "best@4/std", "maj@4/mean", "maj@4/std"):
        assert f"val-core/{source}/reward/{key}" in row, key
    for key in ("std@4", "best@2/mean", "worst@4/mean", "worst@2/std", "maj@2/mean"):
        assert f"val-aux/{source}/reward/{key}" in row, key
    assert f"val-aux/{source}/score/mean@4" in row  # every numeric key of the dict, as verl logs
    assert row[f"val-core/{source}/reward/mean@4"] == pytest.approx(row["val/reward/mean"])
    # verl's metrics of the dumped answers (prompt text as the uid, pred as the reward gave it)
    dumped = [json.loads(line) for line in (tmp_path / "val" / "2.jsonl").read_text().splitlines()]
    assert len(dumped) == 4 * 4
    infos: dict[str, list[Any]] = {"reward": [], "score": [], "pred": []}
    for d in dumped:
        letters = [c for c in d["output"] if not c.isspace()]
        for k, v in (("reward", d["score"]), ("score", d["score"]), ("pred", letters[0] if letters else "")):
            infos[k].append(v)
    expected = named([source] * len(dumped), [d["input"] for d in dumped], dict(infos))
    ours = {k: v for k, v in row.items() if k.startswith(("val-core/", "val-aux/"))}
    assert sorted(ours) == sorted(expected)
    assert ours == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-12, abs=1e-15)
    assert statistics.fmean(infos["reward"]) == pytest.approx(row[f"val-core/{source}/reward/mean@4"])


def test_unhashable_pred_is_refused_by_name() -> None:
    from rlport.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'pred' cannot be voted on: \[\[7\], \[7\]\]") as err:
        prompt_metrics([1.0, 0.0], [[7], [7]])
    assert "'pred': '72'" in err.value.fix
