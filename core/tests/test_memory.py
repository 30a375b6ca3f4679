"""Sleep/wake by tag on the host memory backend, and the generic device-module backend on a fake
device module (no accelerator here: the fake stands in for torch.<device>)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from rlport import bootstrap
from rlport.errors import RlportError
from rlport.memory import DeviceModuleMemory, HostMemory, TaggedMemory
from rlport.types import DeviceInfo


def rss() -> int:
    """This process's resident bytes (robust to other processes, unlike machine-wide free memory)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_sleep_releases_and_wake_restores_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.LayerNorm(2048))
    model[1].weight.data.normal_()  # not all ones: a zero-fill would be caught
    kv = torch.randn(4, 1024, 256)
    untagged = torch.randn(1024, 1024)
    before, kv_before, untagged_before = snapshot(model), kv.clone(), untagged.clone()

    memory = bootstrap.init().tagged_memory()
    memory.register("weights", model)
    memory.register("kv_cache", kv)
    tagged = memory.tagged_bytes("weights", "kv_cache")
    assert tagged == sum(t.numel() * t.element_size() for t in [*before.values(), kv])

    rss_before = rss()
    released = memory.sleep("weights", "kv_cache")
    rss_after = rss()
    assert released == tagged
    assert all(p.untyped_storage().nbytes() == 0 for p in model.parameters())
    assert kv.untyped_storage().nbytes() == 0
    # the process really gives the bytes back (the conformance suite checks the platform's own
    # free-memory query, which other processes on a shared machine make noisy)
    assert rss_before - rss_after >= 0.9 * tagged
    assert torch.equal(untagged, untagged_before)

    memory.wake_up("weights", "kv_cache")
    after = snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(kv, kv_before)
    assert model(torch.ones(1, 2048)).shape == (1, 2048)


def test_views_and_tied_weights_come_back_shared() -> None:
    emb = torch.nn.Embedding(100, 32)
    head = torch.nn.Linear(32, 100, bias=False)
    head.weight = emb.weight  # tied, as in many LMs
    view = emb.weight[10:20]
    memory = TaggedMemory(HostMemory())
    memory.register("weights", [emb.weight, head.weight])
    assert memory.tagged_bytes() == 100 * 32 * 4  # one storage, counted once
    expected = view.clone()
    memory.sleep()
    memory.wake_up()
    assert head.weight.data_ptr() == emb.weight.data_ptr()
    assert torch.equal(view, expected)


def test_wake_only_the_tag_asked_for() -> None:
    a, b = torch.randn(1000), torch.randn(1000)
    memory = TaggedMemory(HostMemory())
    memory.register("weights", a)
    memory.register("kv_cache", b)
    memory.sleep()
    memory.wake_up("weights")
    assert memory.is_asleep("kv_cache") and not memory.is_asleep("weights")
    assert a.untyped_storage().nbytes() == 4000 and b.untyped_storage().nbytes() == 0


def test_unknown_tag_and_double_registration_are_clear_errors() -> None:
    t = torch.zeros(8)
    memory = TaggedMemory(HostMemory())
    memory.register("weights", t)
    with pytest.raises(RlportError, match=r"unknown memory tag\(s\) \['kv'\]"):
        memory.sleep("kv")
    with pytest.raises(RlportError, match="shares storage with tag 'weights'"):
        memory.register("kv_cache", t[:4])


def test_device_module_backend_against_a_fake_device_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generic backend any device plugin can reuse, driven through a fake ``torch.<device>``
    module whose tensors live on the host (no accelerator here)."""
    fake = types.ModuleType("fake_device_module")
    fake.mem_get_info = lambda: (3 * 2**30, 8 * 2**30)
    fake.cleared = 0

    def empty_cache() -> None:
        fake.cleared += 1

    fake.empty_cache = empty_cache
    monkeypatch.setitem(sys.modules, "fake_device_module", fake)
    backend = DeviceModuleMemory(DeviceInfo(device_type="cpu", count=1, device_module="fake_device_module"))
    assert backend.mem_info().free_bytes == 3 * 2**30 and backend.name == "fake_device_module"
    assert backend.pin is False  # the fake reports no live device runtime
    weights = torch.randn(256, 256)
    expected = weights.clone()
    memory = TaggedMemory(backend)
    memory.register("weights", weights)
    memory.sleep()
    assert fake.cleared == 1 and weights.untyped_storage().nbytes() == 0
    memory.wake_up()
    assert torch.equal(weights, expected)


def test_storage_that_cannot_be_released_is_refused_with_the_fix(tmp_path) -> None:
    path = tmp_path / "w.bin"
    torch.arange(16, dtype=torch.float32).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=16, dtype=torch.float32)
    memory = TaggedMemory(HostMemory())
    with pytest.raises(RlportError, match="cannot be released") as info:
        memory.register("weights", mapped)
    assert "clone()" in info.value.fix


def test_host_memory_refuses_storage_that_is_not_on_the_host() -> None:
    """HostMemory read device pointers as host addresses (garbage, or EFAULT on a device whose
    memory the host cannot address); now any non-host storage is refused, naming the device and
    the backend to use. The meta device stands in for an accelerator: its storage has no host bytes."""
    storage = torch.empty(64, device="meta").untyped_storage()
    with pytest.raises(RlportError, match=r"on meta: its data pointer is not a host address") as err:
        HostMemory().park(storage)
    assert "DeviceModuleMemory" in err.value.fix


def test_sleep_works_where_the_device_cannot_resize_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage resizing is optional for a PrivateUse1 backend: where resize_ raises, sleep swaps the
    registered tensors onto an empty storage and wake onto a new one with the parked bytes, each at
    its old offset, size and stride; tied weights come back tied."""
    emb = torch.nn.Embedding(64, 16)
    head = torch.nn.Linear(16, 64, bias=False)
    head.weight = emb.weight
    norm = torch.nn.LayerNorm(16)
    norm.weight.data.normal_()
    model = torch.nn.ModuleList([emb, head, norm])
    before = snapshot(model)

    def no_resize(self: torch.UntypedStorage, size: int) -> None:
        raise RuntimeError("resize is not supported on this device")

    monkeypatch.setattr(torch.UntypedStorage, "resize_", no_resize)
    memory = TaggedMemory(HostMemory())
    memory.register("weights", model)
    tagged = memory.tagged_bytes()
    assert memory.sleep() == tagged
    assert all(p.untyped_storage().nbytes() == 0 for p in model.parameters())
    memory.sleep()  # asleep already: nothing more
    memory.wake_up()
    assert head.weight.data_ptr() == emb.weight.data_ptr()
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert memory.tagged_bytes() == tagged
    memory.sleep()  # a second cycle over the new storages
    memory.wake_up()
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())
    with pytest.raises(RlportError, match="shares storage with tag 'weights'"):
        memory.register("kv_cache", emb.weight)  # the new storage is still owned by its tag


def test_device_memory_falls_back_to_torch_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device module without mem_get_info/empty_cache (or none at all) gets its figures from
    torch.accelerator when that serves the device; otherwise the error names both."""
    fake = types.ModuleType("fake_bare_module")  # no memory functions at all
    monkeypatch.setitem(sys.modules, "fake_bare_module", fake)
    backend = DeviceModuleMemory(DeviceInfo(device_type="simdev", count=2, device_module="fake_bare_module"))
    with pytest.raises(RlportError, match=r"torch\.accelerator serves") as err:
        backend.mem_info()
    assert "mem_get_info()" in err.value.fix
    cleared: list[int] = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.accelerator, "current_accelerator", lambda: types.SimpleNamespace(type="simdev")
    )
    monkeypatch.setattr(torch.accelerator, "get_memory_info", lambda: (5, 9))
    monkeypatch.setattr(torch.accelerator, "empty_cache", lambda: cleared.append(1))
    assert (backend.mem_info().free_bytes, backend.mem_info().total_bytes) == (5, 9)
    backend.empty_cache()
    assert cleared == [1]
    bare = DeviceModuleMemory(DeviceInfo(device_type="simdev", count=1))  # no device module named
    assert bare.mem_info().total_bytes == 9 and "torch.accelerator" in bare.name
