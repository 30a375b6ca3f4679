"""Fakes for the ROCm plugin's probe: a KFD sysfs tree and ``/dev/kfd`` in a temporary folder, and a
recording ``amdsmi`` module. The property files follow the kernel's KFD topology format (one
``name value`` per line; CPU nodes have ``gfx_target_version 0``)."""

from __future__ import annotations

import importlib.machinery
import types
from pathlib import Path
from typing import Any

CPU_NODE = "cpu_cores_count 96\nsimd_count 0\ngfx_target_version 0\nvendor_id 0\ndevice_id 0\n"


def gpu_node(target_version: int, device_id: int = 29857) -> str:
    return (
        "cpu_cores_count 0\nsimd_count 1216\nmem_banks_count 1\n"
        f"gfx_target_version {target_version}\nvendor_id 4098\ndevice_id {device_id}\ndrm_render_minor 128\n"
    )


def machine(
    root: Path, gpus: tuple[int, ...], *, kfd: bool = True, driver: str | None = "6.8.5"
) -> tuple[Path, Path]:
    """``(sys_root, dev_root)`` with one CPU node and a GPU node per ``gfx_target_version``."""
    sys_root, dev_root = root / "sys", root / "dev"
    nodes = sys_root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    for index, text in enumerate([CPU_NODE, *(gpu_node(v) for v in gpus)]):
        (nodes / str(index)).mkdir(parents=True)
        (nodes / str(index) / "properties").write_text(text)
    dev_root.mkdir(parents=True)
    if kfd:
        (dev_root / "kfd").touch()
    if driver:
        (sys_root / "module" / "amdgpu").mkdir(parents=True)
        (sys_root / "module" / "amdgpu" / "version").write_text(driver + "\n")
    return sys_root, dev_root


class FakeAmdSmi:
    def __init__(
        self, names: tuple[str, ...] = ("AMD Instinct MI300X",), driver: str = "6.10.5", fail: bool = False
    ) -> None:
        self.names, self.driver, self.fail = names, driver, fail
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def amdsmi_init(self) -> None:
        self.calls.append(("amdsmi_init", ()))
        if self.fail:
            raise RuntimeError("AMDSMI_STATUS_INIT_ERROR")

    def amdsmi_shut_down(self) -> None:
        self.calls.append(("amdsmi_shut_down", ()))

    def amdsmi_get_processor_handles(self) -> list[int]:
        self.calls.append(("amdsmi_get_processor_handles", ()))
        return list(range(len(self.names)))

    def amdsmi_get_gpu_asic_info(self, handle: int) -> dict[str, Any]:
        self.calls.append(("amdsmi_get_gpu_asic_info", (handle,)))
        return {"market_name": self.names[handle], "target_graphics_version": "gfx942", "vendor_id": 4098}

    def amdsmi_get_gpu_driver_info(self, handle: int) -> dict[str, str]:
        self.calls.append(("amdsmi_get_gpu_driver_info", (handle,)))
        return {"driver_name": "amdgpu", "driver_version": self.driver, "driver_date": "2015/01/01 00:00"}

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("amdsmi")
        mod.__spec__ = importlib.machinery.ModuleSpec("amdsmi", None)
        for name in dir(self):
            if name.startswith("amdsmi_"):
                setattr(mod, name, getattr(self, name))
        return mod
