"""Each test starts with no rlport runtime, no rlport variables and none of the variables EFA reads."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlport import runtime as runtime_mod

sys.path.insert(0, str(Path(__file__).parent))  # fakes.py

PREFIXES = ("RLPORT_", "NCCL_", "FI_", "RDMAV_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    runtime_mod.reset()
    for key in list(os.environ):
        if key.startswith(PREFIXES) or key == "LD_LIBRARY_PATH":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RLPORT_SUMMARY", "0")
    yield
    runtime_mod.reset()
