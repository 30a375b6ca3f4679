"""Finding NVIDIA GPUs without torch: NVML (``pynvml`` from ``nvidia-ml-py``) when it is installed and
the driver loads, else the driver's device files.

``/dev/nvidia<N>`` exist per GPU inside the container that was given them; ``/proc/driver/nvidia/version``
exists wherever the kernel module is loaded, also in a container given no GPU, so it names the driver
but never counts as a GPU. Both roots are parameters so tests can point them at a folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.devices import optional

_DEVICE_FILE = re.compile(r"^nvidia(\d+)$")
_DRIVER = re.compile(r"NVRM version:.*?\s(\d+\.\d+(?:\.\d+)?)\s")


@dataclass(frozen=True)
class NvidiaScan:
    """What the machine says about its NVIDIA GPUs. ``cuda_driver`` is the newest CUDA version the
    driver supports (NVML only); ``capabilities`` the compute capability of each GPU (NVML only);
    ``source`` names where the count came from; ``nvml_error`` why NVML was not used."""

    count: int
    names: tuple[str, ...] = ()
    driver: str | None = None
    cuda_driver: str | None = None
    capabilities: tuple[tuple[int, int], ...] = ()
    source: str = ""
    nvml_error: str = ""

    @property
    def driver_major(self) -> str | None:
        return self.driver.split(".")[0] if self.driver else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version(encoded: int) -> str:
    """NVML's CUDA version integer (``12040``) as ``"12.4"``."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def scan_nvml(nvml: Any) -> NvidiaScan:
    """Ask NVML; raises what NVML raises when the library or driver is missing."""
    nvml.nvmlInit()
    try:
        count = int(nvml.nvmlDeviceGetCount())
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        return NvidiaScan(
            count=count,
            names=tuple(_text(nvml.nvmlDeviceGetName(h)) for h in handles),
            driver=_text(nvml.nvmlSystemGetDriverVersion()),
            cuda_driver=cuda_version(int(nvml.nvmlSystemGetCudaDriverVersion())),
            capabilities=tuple(tuple(nvml.nvmlDeviceGetCudaComputeCapability(h)) for h in handles),
            source="NVML",
        )
    finally:
        nvml.nvmlShutdown()


def driver_version(proc_root: Path | str = "/proc") -> str | None:
    """The loaded kernel module's version from ``<proc_root>/driver/nvidia/version``, or ``None``."""
    try:
        text = (Path(proc_root) / "driver" / "nvidia" / "version").read_text()
    except OSError:
        return None
    match = _DRIVER.search(text)
    return match.group(1) if match else None


def device_files(dev_root: Path | str = "/dev") -> list[int]:
    """The GPU indices of ``<dev_root>/nvidia<N>`` device files, sorted."""
    try:
        names = [p.name for p in Path(dev_root).iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _DEVICE_FILE.match(n)))


def scan(*, dev_root: Path | str = "/dev", proc_root: Path | str = "/proc", nvml: Any = None) -> NvidiaScan:
    """NVML when available and it loads (``nvml``: the module to use, default ``pynvml`` if
    installed), else the device files."""
    error = ""
    if nvml is None:
        nvml, why = optional.load("pynvml", "pip install 'rlport-cuda[nvml]'")
        error = f"NVML unused: {why}" if why else ""
    if nvml is not None:
        try:
            return scan_nvml(nvml)
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            error = f"NVML failed: {type(exc).__name__}: {exc}"
    files = device_files(dev_root)
    return NvidiaScan(
        count=len(files), driver=driver_version(proc_root), source="device files", nvml_error=error
    )
