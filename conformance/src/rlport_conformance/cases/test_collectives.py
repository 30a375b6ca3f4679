"""Collectives cases: all_reduce, all_gather (rank order), reduce_scatter and broadcast from every
root, over several dtypes and unaligned counts, at every world size of the run's profile (spawned
ranks whose process group is started by ``rlport.collectives`` with the backend the plugin names).
Zero tolerance; ``#wrong`` per case. The ranks of one world size run once per session (one spawn),
each case reads its share of the results."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from rlport_conformance import collective_worker as cw
from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status

#: All cases of one world size, the 64 MiB ones included.
SPAWN_TIMEOUT_S = 480.0


@pytest.fixture(scope="session")
def collective_runs() -> dict[int, dict[str, Any]]:
    """One spawn of ``world`` ranks per world size of the run's profile, made when its first case
    runs (a filtered run spawns only the sizes it selected) and holding all its cases at once."""
    return {}


def _too_few_devices(
    conformance: Any, world: int, what: str = "the collectives cases"
) -> dict[str, Any] | None:
    """The outcome of a spawn of ``world`` ranks that this machine has too few devices for, else None."""
    info = conformance.rt.device
    if info.device_type == "cpu" or info.count >= world:
        return None
    return {
        "ranks": [None] * world,
        "crashed": None,
        "timed_out": False,
        "resource": f"{what} need {world} devices, this machine shows {info.count}; "
        f"certify the devices it has with --world-size {max(1, info.count)}",
    }


def _spawn(conformance: Any, perf: Any, world: int) -> dict[str, Any]:
    short = _too_few_devices(conformance, world)
    if short is not None:
        return short
    cases = [
        {"id": c.id, **{k: c.facet.get(k) for k in ("op", "dtype", "count", "root", "reduce_op")}}
        for c in conformance.cases
        if c.group == "collectives" and "op" in c.facet and c.facet["world"] == world
    ]
    workdir = Path(tempfile.mkdtemp(prefix=f"rlport-conformance-collectives-r{world}-"))
    outcome = cw.spawn(cases, workdir, world, SPAWN_TIMEOUT_S, conformance.run_perf)
    ranks = [r for r in outcome["ranks"] if r]
    if conformance.run_perf and len(ranks) == world:
        for op, factor in cw.BUSBW_FACTOR.items():
            figures = [r.get("perf", {}).get(op, {}) for r in ranks]
            if all("seconds" in f for f in figures):
                seconds = max(f["seconds"] for f in figures)
                algbw = figures[0]["bytes"] / seconds / 1e9
                label = f"collectives.{op}[float32-{cw.PERF_BYTES // 2**20}MiB-{world}ranks]"
                perf.record(label, algbw, "GB/s", "algbw", cw.PERF_REPEATS, seconds=seconds)
                perf.record(label, algbw * factor(world), "GB/s", "busbw", cw.PERF_REPEATS)
    return outcome


@pytest.fixture
def collective_run(
    planned: Any, conformance: Any, perf: Any, collective_runs: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """The spawn that ran this case's world size."""
    world = planned.facet["world"]
    if world not in collective_runs:
        collective_runs[world] = _spawn(conformance, perf, world)
    return collective_runs[world]


def _absent(
    case: CaseContext, outcome: dict[str, Any], what: str, timeout_s: float = SPAWN_TIMEOUT_S
) -> None:
    """Record why a rank produced no result for this case (the training group's sharded case too)."""
    errors = [f"rank {i}: {r['error']}" for i, r in enumerate(outcome["ranks"]) if r and r.get("error")]
    if outcome.get("resource"):
        case.record(Status.RESOURCE_ERROR, outcome["resource"])
    elif outcome["timed_out"]:
        case.record(Status.TIMEOUT, f"the ranks did not finish within {timeout_s:g} s ({what})")
    elif outcome["crashed"]:
        case.record(Status.CRASH, f"a rank died: {outcome['crashed']}")
    elif errors:
        case.fail("; ".join(errors))
    else:
        case.record(Status.INTERNAL_ERROR, f"no result from the ranks for {what}")


@pytest.mark.rlport_case("collectives.backend")
def test_backend(case: CaseContext, collective_run: dict[str, Any]) -> None:
    ranks = collective_run["ranks"]
    if not all(r and "backend" in r for r in ranks):
        _absent(case, collective_run, "process-group start")
        return
    for i, r in enumerate(ranks):
        b = r["backend"]
        case.check(
            b["actual"] == b["expected"],
            f"rank {i}: process group runs {b['actual']!r}, the plugin names {b['expected']!r}",
        )
    case.metric(backend=ranks[0]["backend"]["actual"])


@pytest.mark.rlport_case("collectives.preflight")
def test_preflight(case: CaseContext, collective_run: dict[str, Any]) -> None:
    ranks = collective_run["ranks"]
    if not all(r and ("preflight" in r or "preflight_error" in r) for r in ranks):
        _absent(case, collective_run, "the preflight")
        return
    for i, r in enumerate(ranks):
        if "preflight_error" in r:
            case.fail(f"rank {i}: preflight raised {r['preflight_error']}")
            continue
        failed = [f"{p['name']}: {p['detail']}" for p in r["preflight"] if not p["ok"]]
        case.check(not failed, f"rank {i}: preflight failed: {'; '.join(failed)}")
    case.metric(checks=[p["name"] for p in ranks[0].get("preflight", [])])


def _collective(case: CaseContext, outcome: dict[str, Any]) -> None:
    per_rank = [r.get("cases", {}).get(case.id) if r else None for r in outcome["ranks"]]
    if any(p is None for p in per_rank):
        _absent(case, outcome, case.id)
        return
    errors = [f"rank {i}: {p['error']}" for i, p in enumerate(per_rank) if "error" in p]
    if errors:
        if case.claimed:
            case.fail("; ".join(errors))
        else:
            case.record(Status.NOT_SUPPORTED, "not claimed, and the backend refused it: " + "; ".join(errors))
        return
    wrong = sum(p["wrong"] for p in per_rank)
    numel = sum(p["numel"] for p in per_rank)
    detail = ", ".join(
        f"rank {i}: {p['wrong']} (first at {p['first_wrong_index']})"
        for i, p in enumerate(per_rank)
        if p["wrong"]
    )
    case.check(wrong == 0, f"#wrong {wrong} of {numel} elements ({detail})", wrong=wrong, numel=numel)
    if wrong == 0 and not case.claimed:
        case.record(
            Status.COMPATIBILITY_WARNING, f"all_reduce {case.facet['reduce_op']} works but is not claimed"
        )


@pytest.mark.rlport_case("collectives.all_reduce")
def test_all_reduce(case: CaseContext, collective_run: dict[str, Any]) -> None:
    _collective(case, collective_run)


@pytest.mark.rlport_case("collectives.all_reduce_op")
def test_all_reduce_op(case: CaseContext, collective_run: dict[str, Any]) -> None:
    """all_reduce with PRODUCT, MIN, MAX and AVG (SUM is ``collectives.all_reduce``); AVG is probed
    unless ``Capabilities.reduce_ops`` claims it."""
    _collective(case, collective_run)


@pytest.mark.rlport_case("collectives.all_gather")
def test_all_gather(case: CaseContext, collective_run: dict[str, Any]) -> None:
    _collective(case, collective_run)


@pytest.mark.rlport_case("collectives.reduce_scatter")
def test_reduce_scatter(case: CaseContext, collective_run: dict[str, Any]) -> None:
    _collective(case, collective_run)


@pytest.mark.rlport_case("collectives.broadcast")
def test_broadcast(case: CaseContext, collective_run: dict[str, Any]) -> None:
    _collective(case, collective_run)
