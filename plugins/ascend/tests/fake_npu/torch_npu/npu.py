"""A fake ``torch.npu`` device module: the part of its API the plugin and the core's device helpers use.

Counts, names and memory are set by tests through :data:`STATE`; nothing allocates on a device.
"""

from __future__ import annotations

STATE = {
    "count": 2,
    "names": ["Ascend910B2", "Ascend910B2"],
    "free": 60 * 2**30,
    "total": 64 * 2**30,
    "current": 0,
    "empty_cache_calls": 0,
}


def is_available() -> bool:
    return STATE["count"] > 0


def device_count() -> int:
    return STATE["count"]


def get_device_name(device=None) -> str:
    index = current_device() if device is None else int(getattr(device, "index", device) or 0)
    return STATE["names"][index]


def current_device() -> int:
    return STATE["current"]


def set_device(device) -> None:
    STATE["current"] = int(getattr(device, "index", device) or 0)


def synchronize(device=None) -> None:
    return None


def mem_get_info(device=None) -> tuple[int, int]:
    return STATE["free"], STATE["total"]


def empty_cache() -> None:
    STATE["empty_cache_calls"] += 1


def memory_allocated(device=None) -> int:
    return STATE["total"] - STATE["free"]


def memory_reserved(device=None) -> int:
    return STATE["total"] - STATE["free"]


class _Properties:
    def __init__(self, index: int) -> None:
        self.name = STATE["names"][index]
        self.total_memory = STATE["total"]


def get_device_properties(device=None) -> _Properties:
    index = current_device() if device is None else int(getattr(device, "index", device) or 0)
    return _Properties(index)
