"""A fake ``pynvml`` (nvidia-ml-py) that records every call, for probing without a GPU.

It answers the calls the plugin makes, in NVML's own shapes: names as ``bytes`` (older nvidia-ml-py)
or ``str``, the CUDA driver version as an integer (``12040`` = 12.4), compute capability as a tuple.
``fail_init`` makes ``nvmlInit`` raise the way NVML does without a driver.
"""

from __future__ import annotations

import importlib.machinery
import types
from typing import Any


class NVMLError_LibraryNotFound(Exception):
    pass


class FakeNvml:
    def __init__(
        self,
        names: tuple[Any, ...] = (b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
        *,
        driver: str = "550.54.15",
        cuda: int = 12040,
        capability: tuple[int, int] = (9, 0),
        fail_init: bool = False,
    ) -> None:
        self.names, self.driver, self.cuda, self.capability = names, driver, cuda, capability
        self.fail_init = fail_init
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def nvmlInit(self) -> None:
        self._record("nvmlInit")
        if self.fail_init:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self._record("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._record("nvmlDeviceGetCount")
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        self._record("nvmlDeviceGetHandleByIndex", index)
        if not 0 <= index < len(self.names):
            raise ValueError(f"bad index {index}")
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: tuple[str, int]) -> Any:
        self._record("nvmlDeviceGetName", handle)
        return self.names[handle[1]]

    def nvmlDeviceGetCudaComputeCapability(self, handle: tuple[str, int]) -> tuple[int, int]:
        self._record("nvmlDeviceGetCudaComputeCapability", handle)
        return self.capability

    def nvmlSystemGetDriverVersion(self) -> str:
        self._record("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._record("nvmlSystemGetCudaDriverVersion")
        return self.cuda

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("pynvml")
        mod.__spec__ = importlib.machinery.ModuleSpec("pynvml", None)
        for name in dir(self):
            if name.startswith("nvml"):
                setattr(mod, name, getattr(self, name))
        mod.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
        return mod
