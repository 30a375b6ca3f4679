"""A plugin made by `rlport new-plugin` passes conformance on the host before a hook is written
(architecture.md, job 2): everything it leaves out falls back to the reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_suite

from rlport.scaffold import new_plugin


def test_new_plugin_scaffold_is_conformant_on_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = new_plugin("scaffolded", tmp_path)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
    )
    monkeypatch.setenv("RLPORT_SCAFFOLDED_ON_HOST", "1")
    report = run_suite("scaffolded", pythonpath=site)
    assert report["plugin"]["distribution"] == "rlport-scaffolded"
    assert report["summary"]["verdict"] == "CONFORMANT", report["summary"]
