"""Every pair of the trainer's main settings trains or is refused before work (issue: combinations
that crashed after the run had started). The rows are ``benchmarks/settings_sweep.py``'s
(allpairspy's all-pairs rows over estimator, policy loss, KL mode, rollout correction, LoRA,
strategy x workers, sleep, token budget, gradient checkpointing and the engines installed), each a
two-step demo run in this process; the benchmark prints the same counts."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from demo_runs import benchmark

pytest.importorskip("allpairspy")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SWEEP = benchmark("settings_sweep")


def test_the_rows_hold_every_pair_of_values() -> None:
    """allpairspy's guarantee, checked: for any two dimensions, every pair of their values is in a row."""
    rows = SWEEP.rows()
    labels = [[label for label, _ in row] for row in rows]
    for (a, (_, va)), (b, (_, vb)) in itertools.combinations(enumerate(SWEEP.DIMENSIONS), 2):
        wanted = {(x, y) for (x, _), (y, _) in itertools.product(va, vb)}
        seen = {(row[a], row[b]) for row in labels}
        assert wanted <= seen, (
            f"pairs of {SWEEP.DIMENSIONS[a][0]} x {SWEEP.DIMENSIONS[b][0]} missing: {wanted - seen}"
        )


def test_the_wide_rows_hold_every_pair_every_solo_value_and_seeded_draws() -> None:
    """``--wide``: all-pairs over its own dimensions (CI's rows unchanged) but the pairs the pre-flight
    checks refuse, a row for each solo value,
    and ``--random K --seed N`` rows that the same flags draw again (so ``--only`` reruns them)."""
    dims = SWEEP.WIDE_DIMENSIONS
    names = [name for name, _ in dims]
    wide = SWEEP.rows(wide=True)
    pairs = wide[: len(wide) - len(SWEEP.WIDE_SOLO)]
    labels = [[label for label, _ in row] for row in pairs]
    for (a, (na, va)), (b, (nb, vb)) in itertools.combinations(enumerate(dims), 2):
        # every pair but those the pre-flight checks refuse (left out: they would test nothing else)
        wanted = {
            (x, y)
            for (x, _), (y, _) in itertools.product(va, vb)
            if SWEEP.wide_refusal({na: x, nb: y}) is None
        }
        assert wanted <= {(row[a], row[b]) for row in labels}, (na, nb)
    assert not [row for row in labels if SWEEP.wide_refusal(dict(zip(names, row, strict=True)))]
    solo = {(name, value[0]) for name, value in SWEEP.WIDE_SOLO}
    assert {
        (n, row[names.index(n)][0]) for row, (n, _) in zip(wide[len(pairs) :], SWEEP.WIDE_SOLO, strict=True)
    } == solo
    drawn = SWEEP.rows(wide=True, random=5, seed=3)
    assert drawn[: len(wide)] == wide and drawn == SWEEP.rows(wide=True, random=5, seed=3)
    assert drawn[len(wide) :] != SWEEP.rows(wide=True, random=5, seed=4)[len(wide) :]
    assert len(SWEEP.rows()) < len(wide)  # CI's set is the small one


def test_a_failure_after_the_start_is_a_defect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier can say defect: a run that raises once started is never counted as trained."""
    from rlport.train.driver.trainer import Trainer

    def fails(self: Any) -> Any:
        raise RuntimeError("hf engine: generate() while ['kv_cache', 'weights'] asleep")

    monkeypatch.setattr(Trainer, "fit", fails)
    outcome, detail = SWEEP.run_row(SWEEP.rows()[0], tmp_path)
    assert outcome == "defect" and "after the start" in detail and "asleep" in detail


def test_a_non_finite_figure_is_a_defect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.train.driver.trainer import Trainer

    result = SimpleNamespace(history=[{"step": 1, "actor/loss": math.nan}, {"step": 2, "actor/loss": 0.1}])
    monkeypatch.setattr(Trainer, "fit", lambda self: result)
    outcome, detail = SWEEP.run_row(SWEEP.rows()[0], tmp_path)
    assert outcome == "defect" and "non-finite" in detail


@pytest.mark.slow
def test_every_pair_of_settings_trains_or_is_refused_before_work() -> None:
    lines: list[str] = []
    found = SWEEP.sweep(range(len(SWEEP.rows())), report=lines.append)
    print("\n".join(lines))
    counts = {k: len(v) for k, v in found.items()}
    print(f"settings sweep: {counts}")
    assert not found["defect"], "\n".join(lines)
    # most rows train: a refusal of everything would pass the line above and prove nothing
    assert counts["trained"] >= 2 * counts["refused"], counts
