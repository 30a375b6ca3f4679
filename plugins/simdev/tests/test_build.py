"""The runtime is compiled once into the cache folder and loaded from there afterwards."""

from __future__ import annotations

import time

from conftest import run_python
from rlport_simdev import _build


def test_build_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPORT_SIMDEV_BUILD_DIR", str(tmp_path / "b"))
    assert _build.build_dir() == tmp_path / "b"
    assert (tmp_path / "b").is_dir()


def test_cached_build_loads_without_compiling():
    built = _build.build_dir()
    assert any(built.glob("rlport_simdev_C*.so")), list(built.iterdir())
    start = time.perf_counter()
    proc = run_python(
        "import time, torch; t = time.perf_counter(); import rlport_simdev; "
        "print(time.perf_counter() - t); print(torch.ones(2, device='simdev').sum().item())"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, total = proc.stdout.split()
    assert float(total) == 2.0
    assert float(seconds) < 20, f"import took {seconds}s: the runtime was rebuilt"
    assert time.perf_counter() - start < 60
