"""The import contracts of the repository's pyproject.toml ([tool.importlinter]) hold: the core and
the hardware plugins never import the trainer (``rlport.train``), so the plugin API is the core's
and a plugin installs without the trainer's dependencies; the core and the trainer each stand in
layers (train/README.md draws the trainer's); the algorithms import no workers and no Ray; and no
package has an import cycle among its modules. Checked by import-linter over the installed
packages, as ``lint-imports`` run from the repository root reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    pytest.importorskip("importlinter")
    proc = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-4000:]
    assert "0 broken" in report and report.count("KEPT") >= 6, report[-2000:]
