"""simdev tests: the runtime is built (or loaded from the cache) and the device registered before
the first of them runs. They run in a pytest process of their own (README's test command): torch's
autograd engine sizes its per-device queues at the process's first backward, so a device
registered after another test's backward could run none of its own."""

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
