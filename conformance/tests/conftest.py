"""Fixtures of the suite's own tests: mutant distributions and one shared conformance run of the
built-in CPU plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rlport_conformance import runner


def run_suite(
    plugin: str, keyword: str | None = None, pythonpath: Path | None = None, **options: Any
) -> dict:
    """Run the suite (in its pytest subprocess) and return the report."""
    env = {}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
    opts = runner.RunOptions(plugin=plugin, keyword=keyword, perf=False, quiet=True, env=env, **options)
    return runner.run(opts)


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, float]:
    """``rlport-conformance --plugin cpu`` through the CLI, once per session: (report path, exit code, seconds)."""
    import time

    from rlport_conformance import cli

    out = tmp_path_factory.mktemp("cpu")
    report = out / "cpu.json"
    started = time.perf_counter()
    code = cli.main(["--plugin", "cpu", "--report", str(report), "--junit", str(out / "cpu.xml"), "--quiet"])
    return report, code, time.perf_counter() - started
