"""Memory cases: sleep releases the tagged bytes as the platform's own free-memory query sees them,
wake restores every tagged tensor bit for bit (views and shared storage included), untagged tensors
are untouched, and emptying the cache changes no allocated tensor."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from rlport_conformance.recorder import CaseContext

#: Bytes put under a tag for the "sleep frees" measurement: large against the noise of a shared
#: machine (the host's free memory moves by tens of MiB in a tenth of a second when other processes
#: run), small against any accelerator.
SLEEP_BYTES = 512 * 1024 * 1024
#: Sleep must release at least this share of the tagged bytes.
FREED_SHARE = 0.9
#: Sleep/wake cycles; each gives two estimates (freed by sleep, taken back by wake); the median decides.
CYCLES = 5


def _bits(t: Any) -> Any:
    """A snapshot of ``t``'s bytes (a copy: on the host ``.cpu()`` would alias the storage)."""
    import torch

    return t.detach().contiguous().cpu().view(torch.uint8).clone()


def _random(numel: int, dtype: Any, device: str, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(numel, generator=gen).to(dtype).to(device)
    return torch.randint(-(2**30), 2**30, (numel,), generator=gen, dtype=torch.int64).to(dtype).to(device)


@pytest.mark.rlport_case("memory.mem_info")
def test_mem_info(case: CaseContext, rt: Any) -> None:
    from rlport.types import MemoryInfo

    info = rt.memory.mem_info()
    if not isinstance(info, MemoryInfo):
        case.fail(f"mem_info() returned {type(info).__name__}, expected rlport.types.MemoryInfo")
        return
    case.metric(
        free_bytes=info.free_bytes, total_bytes=info.total_bytes, backend=getattr(rt.memory, "name", None)
    )
    case.check(info.total_bytes > 0, f"total memory {info.total_bytes} <= 0")
    case.check(
        0 <= info.free_bytes <= info.total_bytes,
        f"free {info.free_bytes} not within [0, total {info.total_bytes}]",
    )


@pytest.mark.rlport_case("memory.empty_cache")
def test_empty_cache(case: CaseContext, rt: Any, device: str) -> None:
    import torch

    tensors = [_random(1 << 20, torch.float32, device, 1), _random(1 << 18, torch.bfloat16, device, 2)]
    before = [_bits(t) for t in tensors]
    sizes = [t.untyped_storage().nbytes() for t in tensors]
    garbage = _random(1 << 22, torch.float32, device, 3)
    del garbage  # something for the cache to release
    rt.memory.empty_cache()
    changed = [
        i for i, (t, b) in enumerate(zip(tensors, before, strict=True)) if not torch.equal(_bits(t), b)
    ]
    resized = [
        i for i, (t, n) in enumerate(zip(tensors, sizes, strict=True)) if t.untyped_storage().nbytes() != n
    ]
    case.check(
        not changed and not resized, f"empty_cache changed allocated tensors {changed} / resized {resized}"
    )


def _weights(device: str, seed: int) -> tuple[Any, list[Any]]:
    """A small module with a tied weight and a view, plus extra tensors of several dtypes."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = torch.nn.Sequential(torch.nn.Embedding(512, 256), torch.nn.Linear(256, 512)).to(device)
    module[1].weight = module[0].weight  # tied (512, 256): shared storage
    extra = [_random(100_003, torch.bfloat16, device, seed + 1), _random(4097, torch.int32, device, seed + 2)]
    return module, extra


@pytest.mark.rlport_case("memory.sleep_frees")
def test_sleep_frees(case: CaseContext, rt: Any, device: str, perf: Any) -> None:
    """Median over cycles of the freed share >= FREED_SHARE. Each cycle gives two estimates: free
    memory gained by sleep, and free memory taken back by wake (a transient change elsewhere on the
    machine moves one estimate, rarely the median)."""
    import torch

    tag = case.facet["tag"]
    memory = rt.tagged_memory()
    chunks = [
        torch.full((SLEEP_BYTES // 4 // 4,), float(i), device=device) for i in range(4)
    ]  # touched pages
    memory.register(tag, chunks)
    tagged = memory.tagged_bytes(tag)
    shares, sleeps, wakes = [], [], []
    for _ in range(CYCLES):
        rt.memory.empty_cache()
        before = rt.memory.mem_info().free_bytes
        t0 = time.perf_counter()
        memory.sleep(tag)
        sleeps.append(time.perf_counter() - t0)
        after = rt.memory.mem_info().free_bytes
        t0 = time.perf_counter()
        memory.wake_up(tag)
        wakes.append(time.perf_counter() - t0)
        awake = rt.memory.mem_info().free_bytes
        shares += [(after - before) / tagged, (after - awake) / tagged]
    share = statistics.median(shares)
    shares = [round(x, 4) for x in shares]
    case.check(
        share >= FREED_SHARE,
        f"sleep({tag!r}) freed a median {share:.1%} of {tagged} tagged bytes (need {FREED_SHARE:.0%}) "
        "as rt.memory.mem_info() sees it",
        freed_share=share,
        freed_shares=shares,
        tagged_bytes=tagged,
    )
    mib = tagged / 2**20
    perf.record(f"memory.sleep[{tag}-{mib:.0f}MiB]", statistics.median(sleeps), "s", "sleep_seconds", CYCLES)
    perf.record(f"memory.wake[{tag}-{mib:.0f}MiB]", statistics.median(wakes), "s", "wake_seconds", CYCLES)


@pytest.mark.rlport_case("memory.wake_restores")
def test_wake_restores(case: CaseContext, rt: Any, device: str) -> None:
    """Two round trips with a weight update in between: each wake restores the bytes as they were at
    that sleep (not zeros, not the bytes of an earlier sleep), and views and tied weights still share."""
    import torch

    tag = case.facet["tag"]
    module, extra = _weights(device, 7)
    view = module[0].weight[3:7, 10:20]  # a view into tagged storage
    tensors = [*module.parameters(), *extra]
    memory = rt.tagged_memory()
    memory.register(tag, module)
    memory.register(tag, extra)
    for round_trip in (1, 2):
        before = [_bits(t) for t in tensors]
        memory.sleep(tag)
        asleep = [t.untyped_storage().nbytes() for t in tensors]
        case.check(
            all(n == 0 for n in asleep),
            f"round trip {round_trip}: tagged storage still holds bytes while asleep: {asleep}",
        )
        memory.wake_up(tag)
        wrong = sum(int((_bits(t) != b).sum()) for t, b in zip(tensors, before, strict=True))
        total = sum(b.numel() for b in before)
        case.check(
            wrong == 0,
            f"round trip {round_trip}: after wake_up({tag!r}) {wrong} of {total} bytes differ "
            "from before sleep",
            **{f"wrong_bytes_{round_trip}": wrong, "bytes": total},
        )
        with torch.no_grad():  # an update between the round trips (as update_weights does)
            for t in tensors:
                t.add_(1)
    with torch.no_grad():
        view.fill_(3.0)
    case.check(
        bool((module[1].weight[3:7, 10:20] == 3.0).all()),
        "after wake a view and a tied weight no longer share storage with their base",
    )


@pytest.mark.rlport_case("memory.untagged_untouched")
def test_untagged_untouched(case: CaseContext, rt: Any, device: str) -> None:
    import torch

    tag = case.facet["tag"]
    tagged = _random(1 << 20, torch.float32, device, 11)
    untagged = [_random(1 << 20, torch.float32, device, 12), _random(1 << 16, torch.int32, device, 13)]
    before = [_bits(t) for t in untagged]
    memory = rt.tagged_memory()
    memory.register(tag, tagged)
    memory.sleep(tag)
    during = [torch.equal(_bits(t), b) for t, b in zip(untagged, before, strict=True)]
    sizes = [t.untyped_storage().nbytes() for t in untagged]
    memory.wake_up(tag)
    after = [torch.equal(_bits(t), b) for t, b in zip(untagged, before, strict=True)]
    case.check(all(during) and all(sizes), "untagged tensors changed or were released while the tag slept")
    case.check(all(after), "untagged tensors changed across sleep and wake")


#: ``memory.os_figures``: the plugin's free host memory may differ from the operating system's own
#: figure (psutil's ``available``, the kernel's MemAvailable) by at most this share of the total
#: (or HOST_FREE_FLOOR bytes, whichever is larger), and its total not at all.
HOST_FREE_TOLERANCE = 0.02
HOST_FREE_FLOOR = 256 * 1024 * 1024
#: Bytes held (allocated and touched) to see that held memory is not reported free, and the share
#: of them the reported free memory must drop by.
HELD_BYTES = 128 * 1024 * 1024
HELD_SHARE = 0.5
HELD_BLOCKS = 4


@pytest.mark.rlport_case("memory.os_figures")
def test_os_figures(case: CaseContext, rt: Any, device: str) -> None:
    """Memory still held is never reported free. Where the device is the host, free and total
    memory agree with the operating system's own figures (psutil, read just before and after the
    plugin's), idle and again while HELD_BLOCKS blocks of HELD_BYTES are held. On another device
    (no independent source is consulted yet), after ``empty_cache`` each block held lowers the
    reported free memory by at least HELD_SHARE of its size (median over the blocks)."""
    import torch

    host = rt.device.device_type == "cpu"
    if host:
        _against_os(case, rt, "idle")
    else:
        case.metric(os_source=f"none for device type {rt.device.device_type!r}: held-memory check only")
        rt.memory.empty_cache()
    held = min(HELD_BYTES, rt.memory.mem_info().free_bytes // 16)
    blocks, drops = [], []
    for i in range(HELD_BLOCKS):  # all kept until the end
        before = rt.memory.mem_info().free_bytes
        blocks.append(torch.full((held // 4,), float(i + 1), device=device))  # touched pages
        drops.append((before - rt.memory.mem_info().free_bytes) / held)
    if host:
        _against_os(case, rt, f"holding {HELD_BLOCKS} x {held} bytes")
    else:
        share = statistics.median(drops)
        case.check(
            share >= HELD_SHARE,
            f"holding blocks of {held} bytes lowered mem_info() free memory by a median {share:.1%} of "
            f"each (need {HELD_SHARE:.0%}): memory still held is reported free",
            held_share=share,
            held_bytes=held,
        )
    del blocks
    rt.memory.empty_cache()


def _against_os(case: CaseContext, rt: Any, when: str) -> None:
    """The plugin's host memory figures against psutil's, read around them."""
    import psutil

    first = psutil.virtual_memory()
    info = rt.memory.mem_info()
    second = psutil.virtual_memory()
    low, high = min(first.available, second.available), max(first.available, second.available)
    slack = max(HOST_FREE_TOLERANCE * first.total, HOST_FREE_FLOOR)
    off = max(low - info.free_bytes, info.free_bytes - high, 0)
    key = when.split()[0]
    case.metric(
        os_source="psutil.virtual_memory",
        os_total=first.total,
        **{f"{key}_os_available": [first.available, second.available], f"{key}_free_bytes": info.free_bytes},
    )
    case.check(
        info.total_bytes == first.total,
        f"{when}: mem_info() total {info.total_bytes} bytes, the operating system says {first.total}",
    )
    case.check(
        off <= slack,
        f"{when}: mem_info() free {info.free_bytes} bytes is {off} bytes away from the operating system's "
        f"available memory ({low}..{high}); allowed {slack:.0f} (max({HOST_FREE_TOLERANCE:.0%} of total, "
        f"{HOST_FREE_FLOOR >> 20} MiB)): memory still held is reported free",
        **{f"{key}_free_off_bytes": off},
    )


def _roundtrip(
    case: CaseContext, rt: Any, tag: str, tensors: list[Any], what: str, expected: Any = None
) -> None:
    """Sleep and wake ``tensors`` under ``tag``; each must come back bit for bit, each its own bytes.
    ``expected(i)`` is tensor ``i``'s content check (default: a snapshot taken before sleep)."""
    import torch

    if expected is None:
        before = [_bits(t) for t in tensors]

        def expected(i: int) -> bool:
            return torch.equal(_bits(tensors[i]), before[i])

    memory = rt.tagged_memory()
    memory.register(tag, tensors)
    memory.sleep(tag)
    held = sum(t.untyped_storage().nbytes() for t in tensors)
    case.check(held == 0, f"{what}: tagged storage still holds {held} bytes while asleep")
    memory.wake_up(tag)
    wrong = [i for i in range(len(tensors)) if not expected(i)]
    case.check(
        not wrong,
        f"{what}: after wake_up({tag!r}) {len(wrong)} of {len(tensors)} tensors differ from before sleep "
        f"(first: {wrong[:5]})",
        wrong_tensors=len(wrong),
    )


@pytest.mark.rlport_case("memory.large_tensor")
def test_large_tensor(case: CaseContext, rt: Any, device: str) -> None:
    """One tensor larger than any plausible staging buffer (hundreds of MiB, at most a quarter of the
    free memory) round-trips bit for bit."""
    import torch

    nbytes = min(case.facet["nbytes"], rt.memory.mem_info().free_bytes // 4) // 4 * 4
    tensor = torch.arange(nbytes // 4, dtype=torch.int32, device=device)  # every element its own value
    case.metric(nbytes=nbytes)

    def intact(_: int, step: int = 1 << 23) -> bool:  # compared in 32 MiB pieces: no second copy
        return all(
            torch.equal(
                tensor[i : i + step].cpu(), torch.arange(i, min(i + step, tensor.numel()), dtype=torch.int32)
            )
            for i in range(0, tensor.numel(), step)
        )

    _roundtrip(case, rt, case.facet["tag"], [tensor], f"one tensor of {nbytes} bytes", intact)


@pytest.mark.rlport_case("memory.many_tensors")
def test_many_tensors(case: CaseContext, rt: Any, device: str) -> None:
    """Many tensors of one size, each with its own bytes, come back each to its own (a pool of
    staging buffers keyed by size must not hand one tensor's bytes to another)."""
    import torch

    count, nbytes = case.facet["count"], case.facet["nbytes"]
    base = torch.arange(nbytes // 4, dtype=torch.int32)
    tensors = [(base + i * (nbytes // 4)).to(device) for i in range(count)]
    _roundtrip(case, rt, case.facet["tag"], tensors, f"{count} tensors of {nbytes} bytes")


@pytest.mark.rlport_case("memory.dtype_roundtrip")
def test_dtype_roundtrip(case: CaseContext, rt: Any, device: str) -> None:
    """A claimed dtype's tensors, with signed zeros, infinities, NaN and subnormals among random
    values, round-trip bit for bit."""
    import torch

    from rlport_conformance.attention_math import DTYPES

    dtype = DTYPES[case.facet["dtype"]]
    tensor = _random(100_003, dtype, device, 17)
    tiny = torch.finfo(dtype).tiny
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), tiny / 2, -tiny / 4])
    tensor[: special.numel()] = special.to(dtype).to(device)
    _roundtrip(case, rt, case.facet["tag"], [tensor, tensor[1000:2000].clone()], f"{dtype} tensors")


#: ``memory.cycles``: this many sleep/wake round trips of one tensor of CYCLE_BYTES.
MANY_CYCLES = 20
CYCLE_BYTES = 64 * 1024 * 1024
#: What may grow over the cycles (after a first, warm-up cycle): a few descriptors, and the process's
#: resident, mapped, locked and pinned memory by less than one tensor (a leak per cycle is 20 tensors).
FD_GROWTH = 2


def _locked_bytes() -> int:
    """The process's locked and pinned host memory as the kernel counts it (``VmLck``: mlock;
    ``VmPin``: pages pinned for devices, as pinned-memory allocators and DMA registration do), in
    bytes; 0 where ``/proc`` does not say."""
    total = 0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmLck:", "VmPin:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def _host_pinned_stats(rt: Any) -> Any:
    """The device runtime's own pinned host allocator statistics (``torch.cuda.host_memory_stats``
    style, on the plugin's ``device_module``), or None where the module has none."""
    import importlib

    name = rt.device.device_module
    if not name:
        return None
    stats = getattr(importlib.import_module(name), "host_memory_stats", None)
    if not callable(stats):
        return None
    try:
        stats()
    except Exception:  # the module has the function but no pinned allocator here
        return None
    return stats


@pytest.mark.rlport_case("memory.cycles")
def test_cycles(case: CaseContext, rt: Any, device: str) -> None:
    """Many sleep/wake cycles leak nothing, measured independently of the plugin: the process's open
    file descriptors, resident and mapped memory (psutil), locked and pinned host memory (the
    kernel's VmLck and VmPin; the device module's pinned host allocator where it has one,
    ``torch.cuda.host_memory_stats``), and on another device the backend's
    own free memory; the bytes are intact after the last cycle."""
    import psutil
    import torch

    tag = case.facet["tag"]
    tensor = torch.arange(CYCLE_BYTES // 4, dtype=torch.int32, device=device)
    memory = rt.tagged_memory()
    memory.register(tag, [tensor])
    process = psutil.Process()
    host_stats = _host_pinned_stats(rt)

    def figures() -> dict[str, int]:
        info = process.memory_info()
        return {
            "fds": process.num_fds(),
            "rss": info.rss,
            "vms": info.vms,
            "locked": _locked_bytes(),
            "host_pinned": int(host_stats().get("allocated_bytes.current", 0)) if host_stats else 0,
            "device_free": rt.memory.mem_info().free_bytes if device != "cpu" else 0,
        }

    memory.sleep(tag)
    memory.wake_up(tag)  # the first cycle may allocate what every later one reuses
    first = figures()
    for _ in range(MANY_CYCLES):
        memory.sleep(tag)
        memory.wake_up(tag)
    last = figures()
    growth = {k: last[k] - first[k] for k in first}
    case.metric(cycles=MANY_CYCLES, **{f"{k}_growth": v for k, v in growth.items()})
    case.check(
        growth["fds"] <= FD_GROWTH,
        f"{MANY_CYCLES} sleep/wake cycles left {growth['fds']} more open file descriptors",
    )
    case.metric(
        pinned_sources=["/proc/self/status VmLck+VmPin"] + (["host_memory_stats"] if host_stats else [])
    )
    for key, what in (
        ("rss", "resident"),
        ("vms", "mapped"),
        ("locked", "locked and pinned (VmLck + VmPin)"),
        ("host_pinned", "device runtime's pinned host"),
    ):
        case.check(
            growth[key] < CYCLE_BYTES,
            f"{MANY_CYCLES} sleep/wake cycles of {CYCLE_BYTES >> 20} MiB grew the process's {what} memory "
            f"by {growth[key] >> 20} MiB",
        )
    if device != "cpu":
        case.check(
            -growth["device_free"] < CYCLE_BYTES,
            f"{MANY_CYCLES} cycles lowered the device's free memory by {-growth['device_free'] >> 20} MiB",
        )
    intact = all(
        torch.equal(
            tensor[i : i + (1 << 22)].cpu(),
            torch.arange(i, min(i + (1 << 22), tensor.numel()), dtype=torch.int32),
        )
        for i in range(0, tensor.numel(), 1 << 22)
    )
    case.check(intact, f"after {MANY_CYCLES + 1} cycles the tensor's bytes differ")
