"""Memory backends: the host (parks bytes in a spill file) and any torch device module
(``torch.<device>``-style API: ``mem_get_info``, ``empty_cache``; parks bytes in pinned host memory).

A device plugin usually returns ``DeviceModuleMemory(info)`` from ``rlport_memory_backend`` and only
writes its own backend when its device module differs.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from typing import IO, Any

import torch

from rlport.types import DeviceInfo, MemoryInfo

SPILL_DIR = "RLPORT_SPILL_DIR"


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor viewing ``storage``'s bytes (no copy)."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _host_buffer(storage: torch.UntypedStorage) -> memoryview:
    """A writable buffer over a host storage's bytes (no copy; unlike ``.numpy()`` it leaves the
    storage resizable)."""
    import ctypes

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
    """Memory of an accelerator reached through a torch device module (``info.device_module``).
    Parks bytes in pinned host memory."""

    def __init__(self, info: DeviceInfo) -> None:
        if not info.device_module:
            raise ValueError(f"device {info.device_type!r} names no device module")
        self.name = info.device_module
        self.module: Any = importlib.import_module(info.device_module)
        # pinned host memory makes copies asynchronous-capable and fast; it needs a live device runtime
        self.pin = bool(getattr(self.module, "is_available", lambda: False)())

    def mem_info(self) -> MemoryInfo:
        free, total = self.module.mem_get_info()
        return MemoryInfo(int(free), int(total))

    def empty_cache(self) -> None:
        self.module.empty_cache()

    def park(self, storage: torch.UntypedStorage) -> torch.Tensor:
        view = _bytes_of(storage)
        host = torch.empty(view.numel(), dtype=torch.uint8, pin_memory=self.pin)
        host.copy_(view)
        return host

    def unpark(self, handle: torch.Tensor, storage: torch.UntypedStorage) -> None:
        _bytes_of(storage).copy_(handle)
