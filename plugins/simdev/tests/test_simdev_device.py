"""Devices, the device guard, streams and events, torch.simdev and torch.accelerator."""

from __future__ import annotations

import pytest
import torch
from simdev_support import run_python


def test_two_devices_by_default():
    assert torch.simdev.is_available()
    assert torch.simdev.device_count() == 2
    assert torch.accelerator.device_count() == 2
    assert torch.accelerator.is_available()
    assert torch.accelerator.current_accelerator() == torch.device("simdev")
    assert torch.get_device_module("simdev") is torch.simdev


def test_device_count_from_environment():
    proc = run_python("import torch; print(torch.simdev.device_count())", env={"RLPORT_SIMDEV_DEVICES": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "3"


def test_set_device_and_guard():
    assert torch.simdev.current_device() == 0
    try:
        torch.simdev.set_device(1)
        assert torch.simdev.current_device() == 1
        assert torch.ones(1, device="simdev").device == torch.device("simdev", 1)
        with torch.simdev.device(0):
            assert torch.simdev.current_device() == 0
            assert torch.empty(1, device="simdev").device.index == 0
        assert torch.simdev.current_device() == 1
        torch.accelerator.set_device_index(0)
        assert torch.accelerator.current_device_index() == 0
    finally:
        torch.simdev.set_device(0)
    with pytest.raises(RuntimeError, match="invalid device index"):
        torch.ones(1, device="simdev:7")


def test_copies_between_devices():
    a = torch.arange(5.0, device="simdev:0")
    b = a.to("simdev:1")
    assert b.device.index == 1
    assert torch.equal(b.cpu(), torch.arange(5.0))
    assert b.data_ptr() != a.data_ptr()
    c = torch.empty(5, device="simdev:1").copy_(a)
    assert torch.equal(c.cpu(), a.cpu())


def test_kernel_on_device_one_runs_under_its_guard():
    x = torch.randn(3, 3, device="simdev:1", requires_grad=True)
    (x @ x).sum().backward()
    assert x.grad.device == torch.device("simdev", 1)
    assert torch.simdev.current_device() == 0


def test_streams_and_events():
    s = torch.simdev.Stream()
    assert s.device == torch.device("simdev", 0)
    default = torch.simdev.current_stream()
    assert default.stream_id == torch.simdev.default_stream().stream_id
    with torch.simdev.stream(s):
        assert torch.simdev.current_stream() == s
        y = torch.ones(4, device="simdev") * 3
    assert torch.simdev.current_stream() == default
    start, end = torch.simdev.Event(enable_timing=True), torch.simdev.Event(enable_timing=True)
    start.record()
    y = y @ y
    end.record()
    end.synchronize()
    assert start.query() and end.query()
    assert start.elapsed_time(end) >= 0.0
    s.wait_stream(default)
    default.wait_event(end)
    assert s.query()
    s.synchronize()
    torch.simdev.synchronize()
    torch.accelerator.synchronize()
    assert y.item() == 36.0


def test_device_module_api():
    mod = torch.simdev
    for name in [
        "device_count",
        "is_available",
        "current_device",
        "set_device",
        "synchronize",
        "Stream",
        "Event",
        "current_stream",
        "stream",
        "manual_seed",
        "manual_seed_all",
        "get_rng_state",
        "set_rng_state",
        "memory_allocated",
        "max_memory_allocated",
        "reset_peak_memory_stats",
        "mem_get_info",
        "empty_cache",
        "_is_in_bad_fork",
        "is_bf16_supported",
    ]:
        assert callable(getattr(mod, name)), name
    assert "simdev" in mod.get_device_name(0)


def test_module_to_and_tensor_methods():
    m = torch.nn.Linear(2, 2).simdev()
    assert next(m.parameters()).device.type == "simdev"
    s = torch.ones(2).untyped_storage().simdev()
    assert s.device.type == "simdev"
