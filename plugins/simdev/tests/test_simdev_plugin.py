"""The rlport device plugin for simdev: probe, device info, memory, and the core on this device."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from simdev_support import run_python

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


def test_core_host_memory_refuses_device_storage():
    """The core's HostMemory read a device storage's raw pointer as a host address (SIGSEGV here);
    it now refuses any storage that is not on the host, naming the device and DeviceModuleMemory."""
    code = (
        "import torch\n"
        "from rlport.errors import RlportError\n"
        "from rlport.memory import HostMemory\n"
        "storage = torch.ones(1024, device='simdev').untyped_storage()\n"
        "try:\n"
        "    HostMemory().park(storage)\n"
        "except RlportError as exc:\n"
        "    print('REFUSED', exc.message, exc.fix)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0 and "REFUSED" in proc.stdout, (
        proc.returncode,
        proc.stdout,
        proc.stderr[-500:],
    )
    assert "simdev:0" in proc.stdout and "DeviceModuleMemory" in proc.stdout


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
