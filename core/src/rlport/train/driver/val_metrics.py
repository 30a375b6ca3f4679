"""verl's validation metrics: per data source and per variable of the reward, the mean and spread
of each prompt's N answers and bootstrap estimates of the best, the worst and the majority-vote
answer among K of them, averaged over prompts.

A validation answer carries variables: ``reward`` (its score) and the reward function's extra
information (verl's ``reward_extra_info``: every key of a returned dict, or ``acc`` for a plain
score; see :meth:`rlport.train.data.rewards.RewardManager.result`). For each numeric variable and each
prompt with N answers: ``mean@N``, ``std@N``, and for K = 2, 4, 8, ... below N and N itself
``best@K/mean|std``, ``worst@K/mean|std`` (the mean and standard deviation, over 1000 draws of K
answers with replacement, of the best and the worst of the K), and, where every answer has a
``pred`` (the extracted answer), ``maj@K/mean|std`` (the variable of the answer most of the K
gave). The draws are numpy's legacy generator reseeded with 42 for each of them, as verl draws
them, so the values equal verl's on the same answers.

Names are verl's: ``val-core/<data_source>/<variable>/<metric>`` for the mean, best and majority
at the largest N of the core variable (``acc`` where the source has it, else ``reward``), and
``val-aux/...`` for every other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from functools import cache
from typing import Any

import numpy as np

from rlport.errors import ConfigError

#: bootstrap draws of K answers per prompt, statistic and K (verl's ``n_bootstrap``)
BOOTSTRAP_DRAWS = 1000
#: the seed every bootstrap starts from (verl's ``process_validation_metrics`` default)
BOOTSTRAP_SEED = 42


def subset_sizes(n: int) -> list[int]:
    """The K of ``best@K`` for N answers: 2, 4, 8, ... below N, then N; none for one answer."""
    if n <= 1:
        return []
    sizes = [1 << p for p in range(1, n.bit_length()) if 1 << p < n]
    return [*sizes, n]


@cache
def bootstrap_indices(n: int, k: int, seed: int = BOOTSTRAP_SEED, draws: int = BOOTSTRAP_DRAWS) -> np.ndarray:
    """``draws`` x ``k`` answer indices in ``range(n)``, drawn with replacement by numpy's legacy
    generator seeded with ``seed``: the draws of verl's ``bootstrap_metric``, which reseeds before
    each statistic, so every prompt of N answers sees the same draws for a given K."""
    idx = np.random.RandomState(seed).choice(n, size=(draws, k), replace=True)
    idx.setflags(write=False)
    return idx


def majority_values(values: np.ndarray, preds: list[Hashable], idx: np.ndarray) -> np.ndarray:
    """Per draw (a row of ``idx``), the value of the first answer whose pred is the most common
    of the draw, ties to the pred drawn first: majority voting as verl's ``calc_maj_val``."""
    codes: dict[Hashable, int] = {}
    try:
        drawn = np.asarray([codes.setdefault(p, len(codes)) for p in preds])[idx]
    except TypeError:
        raise ConfigError(
            f"a reward's 'pred' cannot be voted on: {preds!r} holds an unhashable value; expected the "
            "extracted answer as a str or a number",
            "return the answer as text from the reward function, e.g. {'score': 1.0, 'pred': '72'}",
        ) from None
    rows = np.arange(idx.shape[0])[:, None]
    tally = np.bincount((rows * len(codes) + drawn).ravel(), minlength=idx.shape[0] * len(codes))
    # each drawn answer's votes (its pred's count in its draw); the first position with the most
    # votes is the first appearance of the first pred to reach the most
    votes = tally.reshape(idx.shape[0], len(codes))[rows, drawn]
    return values[idx][rows[:, 0], votes.argmax(1)]


def prompt_metrics(values: list[Any], preds: list[Any] | None) -> dict[str, float]:
    """One prompt's metrics of one variable over its answers' ``values`` (None dropped), with
    ``maj@K`` when ``preds`` has a pred for every value."""
    vals = np.asarray(values, dtype=np.float64)
    n = len(vals)
    out = {f"mean@{n}": float(np.mean(vals))}
    if n <= 1:
        return out
    out[f"std@{n}"] = float(np.std(vals))
    vote = preds is not None and len(preds) == n and all(p is not None for p in preds)
    for k in subset_sizes(n):
        idx = bootstrap_indices(n, k)
        drawn = vals[idx]
        stats = {"best": drawn.max(1), "worst": drawn.min(1)}
        if vote:
            stats["maj"] = majority_values(vals, preds, idx)  # type: ignore[arg-type]
        for name, per_draw in stats.items():
            out[f"{name}@{k}/mean"] = float(np.mean(per_draw))
            out[f"{name}@{k}/std"] = float(np.std(per_draw))
    return out


def per_source_metrics(
    answers: Iterable[tuple[str, Hashable, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{data_source: {variable: {metric: value}}}`` over ``answers`` (data source, prompt id,
    variables of one answer): each prompt's :func:`prompt_metrics` per numeric variable, averaged
    over the prompts that have it (verl's ``process_validation_metrics``)."""
    grouped: dict[str, dict[Hashable, dict[str, list[Any]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for source, uid, variables in answers:
        for name, value in variables.items():
            grouped[source][uid][name].append(value)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for source, prompts in grouped.items():
        collected: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for variables in prompts.values():
            preds = variables.get("pred")
            for name, raw in variables.items():
                values = [v for v in raw if v is not None]
                if not values or isinstance(values[0], str):
                    continue
                for metric, value in prompt_metrics(values, preds).items():
                    collected[name][metric].append(value)
        out[source] = {
            name: {metric: float(np.mean(vals)) for metric, vals in metrics.items()}
            for name, metrics in collected.items()
        }
    return out


def _largest_n(metric: str) -> int:
    return int(metric.split("@")[-1].split("/")[0])


def named_metrics(per_source: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """verl's names: ``val-core/<source>/<variable>/<metric>`` for the ``mean``, ``maj`` and
    ``best`` metrics at the variable's largest N of the source's core variable (``acc`` if it has
    one, else ``reward``); ``val-aux/...`` for the others."""
    out: dict[str, float] = {}
    for source, variables in per_source.items():
        core = "acc" if "acc" in variables else "reward"
        for name, metrics in variables.items():
            top = f"@{max(_largest_n(m) for m in metrics)}"
            for metric, value in metrics.items():
                headline = name == core and metric.startswith(("mean", "maj", "best")) and top in metric
                out[f"{'val-core' if headline else 'val-aux'}/{source}/{name}/{metric}"] = value
    return out


def validation_metrics(answers: Iterable[tuple[str, Hashable, Mapping[str, Any]]]) -> dict[str, float]:
    """verl's named validation metrics of ``answers`` (data source, prompt id, variables)."""
    return named_metrics(per_source_metrics(answers))
