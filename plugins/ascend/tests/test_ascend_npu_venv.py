"""The real condition, in a virtual environment with ``torch==2.13.0 torch-npu==2.13.0`` and no CANN:
a bare ``import torch`` fails there (torch_npu's ``torch.backends`` entry point), while every rlport
command starts, ``rlport plugins`` lists ascend as unavailable with the reason, ``rlport doctor`` exits 1
naming the broken ``import torch`` and its fix, and ``rlport train --demo`` trains on the CPU plugin.

Run it with that environment's Python (see the README); anywhere else it is skipped:

    python3 -m venv /tmp/npu && /tmp/npu/bin/pip install torch==2.13.0 torch-npu==2.13.0 \\
      && /tmp/npu/bin/pip install -e "./core[train,test]" -e ./plugins/ascend
    /tmp/npu/bin/python -m pytest plugins/ascend/tests/test_ascend_npu_venv.py -m npu_venv
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from rlport_ascend.probe import detect


def _torch_npu_without_cann() -> str | None:
    try:
        metadata.version("torch-npu")
    except metadata.PackageNotFoundError:
        return "torch-npu is not installed in this environment"
    if detect().cann_ok:
        return "CANN is usable here: the condition under test (torch-npu without CANN) does not hold"
    return None


pytestmark = [
    pytest.mark.npu_venv,
    pytest.mark.skipif(_torch_npu_without_cann() is not None, reason=str(_torch_npu_without_cann())),
]
BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RLPORT_") and k != "TORCH_DEVICE_BACKEND_AUTOLOAD"
    }
    env.update(RAY_AUTH_MODE="disabled", COLUMNS="200")
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_bare_import_torch_fails_here(tmp_path: Path) -> None:
    result = _run(sys.executable, "-c", "import torch", cwd=tmp_path)
    assert result.returncode != 0
    assert "torch_npu" in result.stderr and "TORCH_DEVICE_BACKEND_AUTOLOAD" in result.stderr


def test_plugins_lists_ascend_unavailable_with_the_reason(tmp_path: Path) -> None:
    result = _run(str(BIN / "rlport"), "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert listed["ascend"]["status"] == "unavailable"
    assert "torch-npu is installed but" in listed["ascend"]["reason"] and "CANN" in listed["ascend"]["reason"]
    assert listed["ascend"]["env"] == {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}
    assert listed["cpu"]["status"] == "active"
    table = _run(str(BIN / "rlport"), "plugins", cwd=tmp_path)
    assert table.returncode == 0 and "unavailable" in table.stdout


def test_info_starts(tmp_path: Path) -> None:
    result = _run(str(BIN / "rlport"), "info", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "device plugin: cpu" in result.stdout and "ascend" in result.stdout


def test_doctor_exits_1_naming_the_broken_import_torch(tmp_path: Path) -> None:
    result = _run(str(BIN / "rlport"), "doctor", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "`import torch` fails in every program of this environment" in text
    assert "set_env.sh" in text and "pip uninstall torch-npu" in text


def test_train_demo_runs_on_the_cpu_plugin(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = _run(
        str(BIN / "rlport"), "train", "--demo", "trainer.steps=1", f"trainer.output_dir={out}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "metrics.jsonl").read_text().strip()
