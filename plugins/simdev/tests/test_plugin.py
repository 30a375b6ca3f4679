"""The rlport device plugin for simdev: probe, device info, memory, and the core on this device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import run_python

rlport = pytest.importorskip("rlport")

from rlport_simdev.plugin import ENABLE, SimdevPlugin  # noqa: E402


def test_probe_is_opt_in_and_does_not_import_torch():
    code = (
        "import os, sys\n"
        "from rlport_simdev.plugin import plugin, ENABLE\n"
        "os.environ.pop(ENABLE, None)\n"
        "off = plugin.rlport_probe()\n"
        "os.environ[ENABLE] = '1'\n"
        "on = plugin.rlport_probe()\n"
        "print(off.available, on.available, 'torch' in sys.modules)\n"
        "print(off.reason)\n"
        "print(on.reason)\n"
    )
    proc = run_python(code, register=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, off_reason, on_reason = proc.stdout.splitlines()[:3]
    assert first.split() == ["False", "True", "False"]
    assert ENABLE in off_reason
    assert "2 simulated device(s)" in on_reason


def test_device_info_describes_the_registered_device():
    info = SimdevPlugin().rlport_device_info()
    assert info.device_type == "simdev"
    assert info.count == torch.simdev.device_count() == 2
    assert info.device_module == "torch.simdev"
    assert info.collectives_backend == "simdev"
    assert info.names[0].startswith("simdev 0")


def test_memory_backend_sleeps_and_wakes_device_storage():
    plugin = SimdevPlugin()
    mem = plugin.rlport_memory_backend(plugin.rlport_device_info())
    x = torch.arange(1 << 16, dtype=torch.float32, device="simdev")
    want = x.cpu()
    storage = x.untyped_storage()
    free_before = mem.mem_info().free_bytes
    handle = mem.park(storage)
    nbytes = storage.nbytes()
    storage.resize_(0)
    mem.empty_cache()
    assert mem.mem_info().free_bytes >= free_before + nbytes
    storage.resize_(nbytes)
    mem.unpark(handle, storage)
    assert torch.equal(x.cpu(), want)


def test_capabilities_claim_avg():
    caps = SimdevPlugin().rlport_capabilities()
    assert "avg" in caps.reduce_ops
    assert set(caps.collectives) >= {"all_reduce", "all_gather", "reduce_scatter", "broadcast"}


@pytest.mark.xfail(
    strict=True,
    reason="core defect (issue 20): rlport.memory.HostMemory reads a device storage's raw pointer "
    "(the process dies with SIGSEGV, or gets EFAULT for large storages) instead of refusing "
    "non-host storage with a clear error",
)
def test_core_host_memory_refuses_device_storage():
    code = (
        "import torch\n"
        "from rlport.memory import HostMemory\n"
        "storage = torch.ones(1024, device='simdev').untyped_storage()\n"
        "try:\n"
        "    HostMemory().park(storage)\n"
        "except (ValueError, TypeError, RuntimeError) as exc:\n"
        "    print('REFUSED', exc)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout and "host" in proc.stdout, (
        proc.returncode,
        proc.stdout,
        proc.stderr[-500:],
    )


def test_installed_plugin_is_selected_when_enabled(tmp_path):
    from rlport.testing import pip_install

    plugin_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = pip_install(plugin_root, tmp_path / "site")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), *(p for p in sys.path if p)])
    env[ENABLE] = "1"
    rlport_cli = [sys.executable, "-m", "rlport", "plugins"]
    proc = subprocess.run(rlport_cli, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(line for line in proc.stdout.splitlines() if "simdev" in line and "rlport-simdev" in line)
    assert "active" in row


def _entry_point_only(root) -> str:
    """A folder holding only the distribution's metadata and entry point: with it and src/ on the path,
    rlport finds the plugin and the package runs from the checkout (whose runtime build is cached)."""
    info = root / "rlport_simdev-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rlport-simdev\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[rlport.plugins]\nsimdev = rlport_simdev.plugin:plugin\n")
    return str(root)


def _demo(tmp_path, target, device: str) -> list[dict]:
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), *(p for p in sys.path if p)])
    env.update({"USE_HUB_KERNELS": "0", "RAY_AUTH_MODE": "disabled"})
    if device == "simdev":
        env[ENABLE] = "1"
    else:
        env.pop(ENABLE, None)
    out = tmp_path / device
    out.mkdir()
    cmd = [sys.executable, "-m", "rlport", "train", "--demo", "trainer.steps=3"]
    proc = subprocess.run(cmd, env=env, cwd=out, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"device plugin: {device}" in proc.stdout + proc.stderr
    metrics = out / "outputs" / "rlport-demo" / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines()]


@pytest.mark.slow
def test_demo_on_simdev_equals_the_cpu_plugin(tmp_path):
    """rlport train --demo (1 worker, sleep and actor offload on) gives the cpu plugin's numbers."""
    target = _entry_point_only(tmp_path / "site")
    dev, cpu = _demo(tmp_path, target, "simdev"), _demo(tmp_path, target, "cpu")
    assert len(dev) == len(cpu) == 3
    for step_dev, step_cpu in zip(dev, cpu, strict=True):
        for key, value in step_cpu.items():
            if key.startswith(("reward/", "actor/")):
                assert step_dev[key] == value, key
