"""The runtime is compiled once into the cache folder and loaded from there afterwards."""

from __future__ import annotations

from rlport_simdev import _build
from simdev_support import run_python


def test_build_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPORT_SIMDEV_BUILD_DIR", str(tmp_path / "b"))
    assert _build.build_dir() == tmp_path / "b"
    assert (tmp_path / "b").is_dir()


def test_cached_build_loads_without_compiling():
    built = _build.build_dir()
    assert any(built.glob("rlport_simdev_C*.so")), list(built.iterdir())
    proc = run_python(
        "import time, torch, rlport_simdev; t = time.perf_counter(); rlport_simdev.register(); "
        "print(time.perf_counter() - t); print(torch.ones(2, device='simdev').sum().item())",
        register=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, total = proc.stdout.split()
    assert float(total) == 2.0
    assert float(seconds) < 15, f"register() took {seconds}s: the runtime was rebuilt"


def test_importing_the_package_registers_nothing():
    proc = run_python(
        "import sys, rlport_simdev; print('torch' in sys.modules, 'rlport_simdev.device' in sys.modules)",
        register=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]
