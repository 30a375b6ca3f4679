"""Generated attention cases (``rlport_conformance.generated``): per claimed dtype and regime, a fixed
set of Hypothesis examples (derandomized, seeded by the case id), forward (``attention.generated``)
and backward (``attention.gradient``), each judged against float64 under the tolerance rule. The first
failing example and its replay information are the case's message and metrics."""

from __future__ import annotations

from typing import Any

import pytest

from rlport_conformance import generated as gen
from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status


def _record(case: CaseContext, outcome: gen.Outcome) -> None:
    case.metric(**outcome.metrics)
    if outcome.status is Status.PASS:
        case.passed(None)
    else:
        case.record(outcome.status, outcome.message)


@pytest.mark.rlport_case("attention.generated")
def test_generated(case: CaseContext, rt: Any, device: str) -> None:
    """Forward: shapes, head dims, GQA, causal/full, scale, masks with fully masked rows, large
    scores, strided inputs, decode up to 32k keys, chunked prefill, varlen."""
    facet = case.facet
    outcome = gen.run_case(
        case.id, facet["regime"], facet, lambda ex: gen.check_forward(rt, device, facet, ex)
    )
    _record(case, outcome)


@pytest.mark.rlport_case("attention.gradient")
def test_gradient(case: CaseContext, rt: Any, device: str) -> None:
    """Backward: dQ, dK and dV against float64 autograd (dense, masked, GQA, windowed, varlen)."""
    facet = case.facet
    outcome = gen.run_case(
        case.id,
        facet["regime"],
        facet,
        lambda ex: gen.check_gradient(rt, device, facet, ex),
        gradient=True,
    )
    _record(case, outcome)
