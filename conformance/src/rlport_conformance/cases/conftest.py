"""Fixtures of the conformance cases (kept here, not in the pytest11 plugin, so that they exist only
where the cases are collected)."""

from __future__ import annotations

from typing import Any

import pytest

from rlport_conformance.plan import PlannedCase
from rlport_conformance.plugin import CONTEXT, session_of
from rlport_conformance.recorder import CaseContext


@pytest.fixture
def case(request: pytest.FixtureRequest, planned: PlannedCase) -> CaseContext:
    """The recording handle of the running case."""
    return request.node.stash[CONTEXT]


@pytest.fixture(scope="session")
def conformance(request: pytest.FixtureRequest) -> Any:
    """The :class:`~rlport_conformance.session.ConformanceSession` (skips outside a conformance run)."""
    session = session_of(request.config)
    if session is None:
        pytest.skip("not a conformance run (pass --rlport-conformance)")
    return session


@pytest.fixture(scope="session")
def rt(conformance: Any) -> Any:
    """The runtime of the plugin under test."""
    return conformance.rt


@pytest.fixture(scope="session")
def perf(conformance: Any) -> Any:
    """Where performance figures go (never part of the verdict)."""
    return conformance.perf


@pytest.fixture(scope="session")
def device(rt: Any) -> str:
    """The torch device string of the plugin under test."""
    return rt.torch_device()
