"""simdev tests: the runtime is built (or loaded from the cache) and the device registered when the
first of them runs, not at collection: the core's and the conformance suite's tests, collected in the
same session, run before on a process where PrivateUse1 is not simdev."""

from __future__ import annotations

from pathlib import Path

import pytest
import rlport_simdev
import torch

HERE = Path(__file__).parent


@pytest.fixture(scope="session", autouse=True)
def simdev_registered() -> None:
    rlport_simdev.register()  # builds/loads the runtime once, registers torch.simdev


@pytest.fixture
def dev() -> torch.device:
    return torch.device("simdev", 0)
