"""The ``torch.simdev`` device module (registered with ``torch._register_device_module``).

It mirrors the parts of ``torch.cuda`` that device-generic PyTorch code (torch.random,
torch.amp, FSDP2, DDP, torch.accelerator) looks up on a device module.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any

import torch

from rlport_simdev._build import load as _load

_C = _load()
_TYPE = "simdev"


def _index(device: Any = None) -> int:
    if device is None:
        return _C.current_device()
    if isinstance(device, int):
        return device
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != _TYPE:
            raise ValueError(f"not a simdev device: {device}")
        return _C.current_device() if device.index is None else device.index
    raise TypeError(f"cannot read a simdev device from {device!r}")


# ---------------------------------------------------------------- devices


def is_available() -> bool:
    return _C.device_count() > 0


def is_initialized() -> bool:
    return True


def _lazy_init() -> None:
    """Nothing to initialize lazily: the runtime is ready once imported."""


def _is_in_bad_fork() -> bool:
    return False


def device_count() -> int:
    return _C.device_count()


def current_device() -> int:
    return _C.current_device()


def set_device(device: Any) -> None:
    index = _index(device)
    if index >= 0:
        _C.set_device(index)


class device:
    """Context manager that makes ``device`` current, then restores the previous one."""

    def __init__(self, device: Any):
        self.index = _index(device)
        self.prev = -1

    def __enter__(self):
        self.prev = _C.current_device()
        _C.set_device(self.index)

    def __exit__(self, *exc):
        _C.set_device(self.prev)
        return False


def get_device_name(device: Any = None) -> str:
    return f"simdev {_index(device)} (simulated accelerator)"


def get_device_capability(device: Any = None) -> tuple[int, int]:
    return (1, 0)


class _Properties:
    def __init__(self, index: int):
        self.name = get_device_name(index)
        self.total_memory = _C.capacity()
        self.index = index

    def __repr__(self) -> str:
        return f"_SimdevDeviceProperties(name={self.name!r}, total_memory={self.total_memory})"


def get_device_properties(device: Any = None) -> _Properties:
    return _Properties(_index(device))


def is_bf16_supported(including_emulation: bool = True) -> bool:
    return True


def get_amp_supported_dtype() -> list[torch.dtype]:
    return [torch.float16, torch.bfloat16]


# ---------------------------------------------------------------- streams and events
# Kernels run synchronously; streams and events exist so that stream-aware code runs
# unchanged, and events record times for elapsed_time.


# Factories rather than subclasses: torch.Event.elapsed_time (and friends) accept only
# exact torch.Event / torch.Stream objects.


def Stream(device: Any = None, priority: int = 0) -> torch.Stream:
    """A new stream on ``device`` (the current simdev device by default)."""
    return torch.Stream(device=torch.device(_TYPE, _index(device)), priority=priority)


def Event(enable_timing: bool = False, blocking: bool = False, interprocess: bool = False) -> torch.Event:
    """A new event on the current simdev device."""
    return torch.Event(device=torch.device(_TYPE, _C.current_device()), enable_timing=enable_timing)


_PRIVATEUSE1 = 20  # c10::DeviceType::PrivateUse1


def current_stream(device: Any = None) -> torch.Stream:
    return torch.accelerator.current_stream(_index(device))


def default_stream(device: Any = None) -> torch.Stream:
    return torch.Stream(stream_id=0, device_index=_index(device), device_type=_PRIVATEUSE1)


def set_stream(stream: torch.Stream) -> None:
    if stream is not None:
        torch.accelerator.set_stream(stream)


@contextlib.contextmanager
def stream(stream: torch.Stream | None):
    if stream is None:
        yield
        return
    prev = current_stream(stream.device_index)
    set_stream(stream)
    try:
        yield
    finally:
        set_stream(prev)


def synchronize(device: Any = None) -> None:
    torch.accelerator.synchronize(_index(device))


# ---------------------------------------------------------------- random numbers


def _default_generators() -> tuple[torch.Generator, ...]:
    return tuple(_C.default_generator(i) for i in range(_C.device_count()))


default_generators = _default_generators()


def manual_seed(seed: int) -> None:
    default_generators[_C.current_device()].manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    for gen in default_generators:
        gen.manual_seed(int(seed))


def seed() -> None:
    default_generators[_C.current_device()].seed()


def seed_all() -> None:
    for gen in default_generators:
        gen.seed()


def initial_seed() -> int:
    return default_generators[_C.current_device()].initial_seed()


def get_rng_state(device: Any = "simdev") -> torch.Tensor:
    return default_generators[_index(device)].get_state()


def set_rng_state(new_state: torch.Tensor, device: Any = "simdev") -> None:
    default_generators[_index(device)].set_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [g.get_state() for g in default_generators]


def set_rng_state_all(new_states: list[torch.Tensor]) -> None:
    for g, s in zip(default_generators, new_states, strict=True):
        g.set_state(s)


# ---------------------------------------------------------------- memory


def memory_stats(device: Any = None) -> OrderedDict[str, int]:
    return OrderedDict(sorted(_C.memory_stats(_index(device)).items()))


def memory_allocated(device: Any = None) -> int:
    return _C.memory_stats(_index(device))["allocated_bytes.all.current"]


def max_memory_allocated(device: Any = None) -> int:
    return _C.memory_stats(_index(device))["allocated_bytes.all.peak"]


def memory_reserved(device: Any = None) -> int:
    return _C.memory_stats(_index(device))["reserved_bytes.all.current"]


def max_memory_reserved(device: Any = None) -> int:
    return _C.memory_stats(_index(device))["reserved_bytes.all.peak"]


def reset_peak_memory_stats(device: Any = None) -> None:
    _C.reset_peak_stats(_index(device))


def reset_accumulated_memory_stats(device: Any = None) -> None:
    _C.reset_accumulated_stats(_index(device))


def mem_get_info(device: Any = None) -> tuple[int, int]:
    """(free, total) bytes of the device's simulated capacity (RLPORT_SIMDEV_MEMORY)."""
    return tuple(_C.mem_get_info(_index(device)))


def empty_cache() -> None:
    _C.empty_cache()


# ---------------------------------------------------------------- checks for tests


def is_protected(tensor: torch.Tensor) -> bool:
    """True when the host cannot currently touch this tensor's memory: the pages' protection as the
    kernel reports it (/proc/self/maps shows ``---p``), and the runtime's own bookkeeping agrees."""
    address = tensor.untyped_storage().data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            low, high = (int(x, 16) for x in span.split("-"))
            if low <= address < high:
                return perms.startswith("---") and _C.is_protected(tensor)
    raise ValueError(f"address {address:#x} of this tensor is not mapped")
