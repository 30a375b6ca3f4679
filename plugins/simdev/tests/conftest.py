"""simdev tests: the runtime is built (or loaded from the cache) once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rlport_simdev  # noqa: F401  (builds/loads the runtime, registers torch.simdev)
import torch

HERE = Path(__file__).parent


def run_python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that imports rlport_simdev like this one."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def dev() -> torch.device:
    return torch.device("simdev", 0)
