"""Both GPU plugins (``plugins/cuda`` and ``plugins/rocm`` of this repository) installed as a user
installs them (``pip install`` into a folder, through ``rlport.testing.pip_install``), then the CLI run in
subprocesses that find them on ``PYTHONPATH``. On a machine without GPUs (the one these tests were written
on) both must be listed as unavailable with their reasons while cpu stays active, and nothing may break."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rlport_cuda import CudaPlugin

from rlport.testing import pip_install

PLUGINS = Path(__file__).resolve().parents[2]


def _has_gpus() -> bool:
    from rlport_rocm import RocmPlugin

    return CudaPlugin().rlport_probe().available or RocmPlugin().rlport_probe().available


pytestmark = pytest.mark.skipif(
    _has_gpus(), reason="checks a machine without GPUs; this one has a GPU plugin available"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip_install(PLUGINS / "cuda", target)
    pip_install(PLUGINS / "rocm", target)
    return target


def run(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    clean.update(PYTHONPATH=str(site), RLPORT_SUMMARY="0", COLUMNS="200", **env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=clean, timeout=300)


def test_the_installed_copies_are_the_ones_found(site: Path) -> None:
    out = run(
        site,
        "-c",
        "import rlport_cuda, rlport_rocm; print(rlport_cuda.__file__); print(rlport_rocm.__file__)",
    )
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(site)) for line in out.stdout.split())


def test_plugins_table_and_json_list_both_unavailable_with_reasons(site: Path) -> None:
    table = run(site, "-m", "rlport", "plugins")
    assert table.returncode == 0, table.stderr
    rows = {
        line.split("│")[1].strip(): line
        for line in table.stdout.splitlines()
        if line.startswith("│ ") and line.split("│")[1].strip()
    }
    assert "active" in rows["cpu"]
    assert (
        "rlport-cuda 0.1.0" in rows["cuda"]
        and "unavailable" in rows["cuda"]
        and "no NVIDIA GPU" in rows["cuda"]
    )
    assert (
        "rlport-rocm 0.1.0" in rows["rocm"] and "unavailable" in rows["rocm"] and "no AMD GPU" in rows["rocm"]
    )
    listed = run(site, "-m", "rlport", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["cpu"]["status"] == "active"
    assert (plugins["cuda"]["status"], plugins["cuda"]["distribution"], plugins["cuda"]["entry_point"]) == (
        "unavailable",
        "rlport-cuda",
        "rlport_cuda:plugin",
    )
    assert plugins["cuda"]["reason"].startswith("no NVIDIA GPU")
    assert plugins["rocm"]["status"] == "unavailable" and plugins["rocm"]["reason"].startswith("no AMD GPU")
    assert plugins["cuda"]["findings"] == [] and plugins["rocm"]["findings"] == []


def test_info_and_doctor_succeed_and_an_explicit_choice_names_the_fix(site: Path) -> None:
    info = run(site, "-m", "rlport", "info")
    assert info.returncode == 0, info.stderr
    assert "device plugin: cpu" in info.stdout and "cuda (rlport-cuda 0.1.0)" in info.stdout
    doctor = run(site, "-m", "rlport", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    chosen = run(site, "-m", "rlport", "info", RLPORT_DEVICE="cuda")
    text = chosen.stdout + chosen.stderr
    assert chosen.returncode != 0
    assert "RLPORT_DEVICE='cuda' names a plugin that is unavailable here: no NVIDIA GPU" in text
    assert "install the NVIDIA driver" in text and "fix: unset RLPORT_DEVICE" in text


def test_import_rlport_imports_neither_torch_nor_a_plugin(site: Path) -> None:
    code = "import sys, rlport; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'rlport_cuda', 'rlport_rocm')))"
    out = run(site, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
