"""Memory backends: the host (parks bytes in a spill file) and any torch device (parks bytes in host
buffers it owns, copied with torch operations).

A device plugin usually returns ``DeviceModuleMemory(info)`` from ``rlport_memory_backend`` and only
writes its own backend when its device differs. ``DeviceModuleMemory`` reads the device's memory
figures from its torch device module (``mem_get_info``, ``empty_cache``) where the module has them,
else from ``torch.accelerator`` (torch 2.13 serves any accelerator, PrivateUse1 ones included), and
never reads a device pointer on the host. ``HostMemory`` is for host storage only and refuses any
other with an error naming the device.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import IO, Any

import torch

from rlport.errors import RlportError
from rlport.types import DeviceInfo, MemoryInfo

SPILL_DIR = "RLPORT_SPILL_DIR"


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor viewing ``storage``'s bytes (no copy)."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _host_buffer(storage: torch.UntypedStorage) -> memoryview:
    """A writable buffer over a host storage's bytes (no copy; unlike ``.numpy()`` it leaves the
    storage resizable). A device storage is refused: its pointer is not a host address."""
    import ctypes

    if storage.device.type != "cpu":
        raise RlportError(
            f"HostMemory parks host storage only, and this storage ({storage.nbytes()} bytes) is on "
            f"{storage.device}: its data pointer is not a host address",
            "return DeviceModuleMemory(device) (from rlport.memory) from rlport_memory_backend for a "
            "device, or a backend of your own that copies the bytes with torch operations",
        )

    return memoryview((ctypes.c_char * storage.nbytes()).from_address(storage.data_ptr())).cast("B")


def host_mem_info() -> MemoryInfo:
    """Available and total host memory, as the kernel reports them (MemAvailable, MemTotal)."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) * 1024
    except OSError:
        page = os.sysconf("SC_PAGE_SIZE")
        return MemoryInfo(os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page)
    return MemoryInfo(fields.get("MemAvailable", fields.get("MemFree", 0)), fields["MemTotal"])


def _can_pin(device_type: str) -> bool:
    """Whether torch can pin host memory for ``device_type``, the process's accelerator (a
    PrivateUse1 backend may not implement pinning)."""
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != device_type:
        return False
    try:
        torch.empty(1, dtype=torch.uint8).pin_memory()
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


class HostMemory:
    """Memory of the host. Sleep writes a storage's bytes to an unlinked spill file (in
    ``RLPORT_SPILL_DIR``, default the temp dir) so the process's memory is really returned."""

    name = "host"

    def mem_info(self) -> MemoryInfo:
        return host_mem_info()

    def empty_cache(self) -> None:
        try:  # return freed heap pages to the kernel where glibc allows it
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def park(self, storage: torch.UntypedStorage) -> IO[bytes]:
        spill = tempfile.TemporaryFile(dir=os.environ.get(SPILL_DIR) or None)  # noqa: SIM115 (closed by unpark)
        if storage.nbytes():
            spill.write(_host_buffer(storage))
        spill.flush()
        return spill

    def unpark(self, handle: IO[bytes], storage: torch.UntypedStorage) -> None:
        handle.seek(0)
        if storage.nbytes():
            read = handle.readinto(_host_buffer(storage))
            if read != storage.nbytes():
                raise OSError(f"spill file returned {read} of {storage.nbytes()} bytes")
        handle.close()


class DeviceModuleMemory:
    """Memory of an accelerator: figures from its torch device module (``info.device_module``) where
    it has ``mem_get_info``/``empty_cache``, else from ``torch.accelerator``; parks bytes in host
    buffers it owns (pinned where the device runtime can pin), copied with torch operations."""

    def __init__(self, info: DeviceInfo) -> None:
        self.device_type = info.device_type
        self.name = info.device_module or f"torch.accelerator ({info.device_type})"
        self.module: Any = importlib.import_module(info.device_module) if info.device_module else None
        # pinned host memory makes copies asynchronous-capable and fast; it needs a live device runtime
        # that implements pinning (an optional part of a PrivateUse1 backend)
        self.pin = bool(getattr(self.module, "is_available", lambda: False)()) and _can_pin(self.device_type)

    def _accelerator(self) -> Any:
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        if accelerator is None or accelerator.type != self.device_type:
            raise RlportError(
                f"device {self.device_type!r}: its module {self.name!r} has no memory figures, and "
                f"torch.accelerator serves {accelerator.type if accelerator else 'no accelerator'!r}",
                "give the device module mem_get_info() and empty_cache(), or register the backend "
                "as torch's accelerator (PrivateUse1)",
            )
        return torch.accelerator

    def mem_info(self) -> MemoryInfo:
        if self.module is not None and hasattr(self.module, "mem_get_info"):
            free, total = self.module.mem_get_info()
        else:
            free, total = self._accelerator().get_memory_info()
        return MemoryInfo(int(free), int(total))

    def empty_cache(self) -> None:
        if self.module is not None and hasattr(self.module, "empty_cache"):
            self.module.empty_cache()
        else:
            self._accelerator().empty_cache()

    def park(self, storage: torch.UntypedStorage) -> torch.Tensor:
        view = _bytes_of(storage)
        host = torch.empty(view.numel(), dtype=torch.uint8, pin_memory=self.pin)
        host.copy_(view)
        return host

    def unpark(self, handle: torch.Tensor, storage: torch.UntypedStorage) -> None:
        _bytes_of(storage).copy_(handle)
