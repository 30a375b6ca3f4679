"""Fixtures (imported by the test modules that use them; no conftest.py, whose module name would
clash with the core's and the conformance suite's in one pytest run): the fake ``torch_npu`` (tests/fake_npu, a folder on ``sys.path`` with no distribution
metadata, so no ``torch.backends`` entry point) and a clean environment for the probe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

FAKE = Path(__file__).parent / "fake_npu"


@pytest.fixture(name="fake_npu")
def fake_npu_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake torch_npu, imported as ``torch_npu`` (which also installs the fake ``torch.npu``)."""
    import importlib.util

    import torch

    real = importlib.util.find_spec("torch_npu")
    if real is not None and not str(real.origin).startswith(str(FAKE)):
        pytest.skip(f"a real torch_npu is installed at {real.origin}; these tests use the fake")
    monkeypatch.syspath_prepend(str(FAKE))
    had_npu = hasattr(torch, "npu")
    import torch_npu

    torch_npu.CALLS.clear()
    state = dict(torch_npu.npu.STATE)
    yield torch_npu
    torch_npu.npu.STATE.clear()
    torch_npu.npu.STATE.update(state)
    for name in [m for m in sys.modules if m == "torch_npu" or m.startswith("torch_npu.")]:
        del sys.modules[name]
    if not had_npu and hasattr(torch, "npu"):
        del torch.npu
