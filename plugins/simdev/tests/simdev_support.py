"""Helpers of the simdev tests (a module name of their own: other test folders have a conftest too)."""

from __future__ import annotations

import os
import subprocess
import sys

#: What a fresh interpreter runs first to have the device.
PRELUDE = "import rlport_simdev; rlport_simdev.register()\n"


def run_python(
    code: str, env: dict | None = None, timeout: float = 120, register: bool = True
) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with this one's path, the device registered first unless told not."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", (PRELUDE if register else "") + code],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
