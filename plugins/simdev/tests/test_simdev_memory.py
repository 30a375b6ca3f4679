"""Device memory: not addressable by the host, counted, capped, resizable, cached."""

from __future__ import annotations

import signal

import torch
from simdev_support import run_python


def test_host_pointer_read_dies_with_sigsegv():
    code = (
        "import ctypes, torch\n"
        "x = torch.arange(1024, dtype=torch.float32, device='simdev')\n"
        "print('before', flush=True)\n"
        "ctypes.string_at(x.data_ptr(), 16)\n"
        "print('read garbage', flush=True)\n"
    )
    proc = run_python(code)
    assert "before" in proc.stdout
    assert "read garbage" not in proc.stdout
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stderr[-2000:])


def test_host_pointer_write_syscall_gets_efault(tmp_path):
    code = (
        "import ctypes, os, torch\n"
        "x = torch.ones(1024, device='simdev')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"fd = os.open({str(tmp_path / 'out')!r}, os.O_WRONLY | os.O_CREAT)\n"
        "n = libc.write(fd, ctypes.c_void_p(x.data_ptr()), ctypes.c_size_t(64))\n"
        "print(n, ctypes.get_errno())\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, errno_ = proc.stdout.split()
    assert int(n) == -1 and int(errno_) == 14  # EFAULT: Bad address


def test_memory_is_protected_outside_kernels(dev):
    x = torch.ones(100, device=dev)
    assert torch.simdev.is_protected(x)
    y = x * 2  # a kernel opened and closed both storages
    assert torch.simdev.is_protected(x) and torch.simdev.is_protected(y)
    assert y.sum().item() == 200.0


def test_memory_stats_follow_allocations(dev):
    torch.simdev.synchronize()
    torch.simdev.empty_cache()
    base = torch.simdev.memory_allocated(dev)
    free0, total = torch.simdev.mem_get_info(dev)
    assert total == torch.simdev.get_device_properties(dev).total_memory
    torch.simdev.reset_peak_memory_stats(dev)
    x = torch.empty(1 << 20, dtype=torch.uint8, device=dev)  # 1 MiB
    assert torch.simdev.memory_allocated(dev) == base + (1 << 20)
    assert torch.simdev.max_memory_allocated(dev) >= base + (1 << 20)
    free1, _ = torch.simdev.mem_get_info(dev)
    assert free1 == free0 - (1 << 20)
    del x
    assert torch.simdev.memory_allocated(dev) == base
    assert torch.simdev.max_memory_allocated(dev) >= base + (1 << 20)  # peak stays
    assert torch.simdev.memory_reserved(dev) >= base + (1 << 20)  # cached
    torch.simdev.empty_cache()
    assert torch.simdev.mem_get_info(dev)[0] == free0
    torch.simdev.reset_peak_memory_stats(dev)
    assert torch.simdev.max_memory_allocated(dev) == base
    # device 1 is counted separately
    before1 = torch.simdev.memory_allocated(1)
    z = torch.empty(4096, dtype=torch.uint8, device="simdev:1")
    assert torch.simdev.memory_allocated(1) == before1 + 4096
    assert torch.simdev.memory_allocated(dev) == base
    del z


def test_torch_accelerator_memory_api(dev):
    assert torch.accelerator.current_accelerator().type == "simdev"
    base = torch.accelerator.memory_allocated(0)
    x = torch.empty(8192, dtype=torch.uint8, device=dev)
    assert torch.accelerator.memory_allocated(0) == base + 8192
    free, total = torch.accelerator.get_memory_info(0)
    assert (free, total) == torch.simdev.mem_get_info(0)
    torch.accelerator.reset_peak_memory_stats(0)
    assert torch.accelerator.max_memory_allocated(0) == torch.simdev.memory_allocated(0)
    del x
    torch.accelerator.empty_cache()
    assert torch.simdev.memory_reserved(0) == torch.simdev.memory_allocated(0)


def test_capacity_is_enforced():
    code = (
        "import torch\n"
        "print(torch.simdev.mem_get_info(0))\n"
        "a = torch.empty(600 * 1024, dtype=torch.uint8, device='simdev')\n"
        "try:\n"
        "    b = torch.empty(600 * 1024, dtype=torch.uint8, device='simdev')\n"
        "except torch.OutOfMemoryError as e:\n"
        "    print('OOM', e)\n"
        "del a\n"
        "b = torch.empty(600 * 1024, dtype=torch.uint8, device='simdev')\n"
        "print('second ok')\n"
    )
    proc = run_python(code, env={"RLPORT_SIMDEV_MEMORY": "1M"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(1048576, 1048576)" in proc.stdout
    assert "OOM simdev out of memory" in proc.stdout
    assert "second ok" in proc.stdout


def test_storage_resize_to_zero_and_back(dev):
    torch.simdev.empty_cache()
    base = torch.simdev.memory_allocated(dev)
    x = torch.arange(4096, dtype=torch.float32, device=dev)
    nbytes = x.untyped_storage().nbytes()
    saved = x.cpu()
    assert torch.simdev.memory_allocated(dev) == base + nbytes
    x.untyped_storage().resize_(0)
    assert x.untyped_storage().nbytes() == 0
    assert torch.simdev.memory_allocated(dev) == base
    x.untyped_storage().resize_(nbytes)
    assert torch.simdev.memory_allocated(dev) == base + nbytes
    x.copy_(saved)
    assert torch.equal(x.cpu(), saved)
    # growing keeps the old bytes
    y = torch.arange(10, dtype=torch.float32, device=dev)
    y.untyped_storage().resize_(4 * 4096)
    assert torch.equal(y.cpu(), torch.arange(10, dtype=torch.float32))


def test_tensor_resize_and_set(dev):
    x = torch.arange(4.0, device=dev)
    x.resize_(2, 5)
    assert x.shape == (2, 5) and torch.equal(x.cpu().flatten()[:4], torch.arange(4.0))
    y = torch.empty(0, device=dev)
    y.set_(x)
    assert y.data_ptr() == x.data_ptr() and y.shape == x.shape
    z = torch.empty(0, device=dev).set_(x.untyped_storage(), 1, (3,), (1,))
    assert torch.equal(z.cpu(), torch.arange(1.0, 4.0))


def test_pinned_host_memory():
    x = torch.ones(16).pin_memory()
    assert x.is_pinned()
    assert not torch.ones(16).is_pinned()
    assert torch.equal(x.to("simdev", non_blocking=True).cpu(), x)
