"""A plugin made by `rlport new-plugin` passes conformance on the host before a hook is written
(architecture.md, job 2): everything it leaves out falls back to the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_suite

from rlport.scaffold import new_plugin
from rlport.testing import pip_install


def test_new_plugin_scaffold_is_conformant_on_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = new_plugin("scaffolded", tmp_path)
    site = pip_install(package, tmp_path / "site")
    monkeypatch.setenv("RLPORT_SCAFFOLDED_ON_HOST", "1")
    report = run_suite("scaffolded", pythonpath=site)
    assert report["plugin"]["distribution"] == "rlport-scaffolded"
    assert report["summary"]["verdict"] == "CONFORMANT", report["summary"]
