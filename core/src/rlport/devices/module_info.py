"""A :class:`~rlport.types.DeviceInfo` filled from a torch device module (``torch.cuda``-style API:
``device_count``, ``get_device_name``, ``get_device_properties``).

The plugin passes what only it knows (the variables, the Ray resource, the collectives backend, how
to name a device's architecture); the device module answers the rest. Importing the module is the
plugin's heavy step, so this is called from ``rlport_device_info``, never from a probe.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlport.devices.peaks import PeakTable, match
from rlport.types import DeviceInfo


@dataclass(frozen=True)
class DeviceProperties:
    """The properties of one device that plugins and the summary use, read from the module's
    ``get_device_properties(i)`` (attributes a module lacks read as 0 / ``""``)."""

    index: int
    name: str
    total_memory: int = 0
    major: int = 0
    minor: int = 0
    multi_processor_count: int = 0
    arch_name: str = ""  # a runtime's own architecture string where it has one (gcnArchName)


def properties(module: Any, index: int) -> DeviceProperties:
    """:class:`DeviceProperties` of device ``index`` of ``module``."""
    props = module.get_device_properties(index)
    return DeviceProperties(
        index=index,
        name=str(getattr(props, "name", "") or module.get_device_name(index)),
        total_memory=int(getattr(props, "total_memory", 0) or 0),
        major=int(getattr(props, "major", 0) or 0),
        minor=int(getattr(props, "minor", 0) or 0),
        multi_processor_count=int(getattr(props, "multi_processor_count", 0) or 0),
        arch_name=str(getattr(props, "gcnArchName", "") or ""),
    )


def describe_module(
    module_name: str,
    device_type: str,
    *,
    visible_devices_env: str | None,
    ray_resource: str | None,
    collectives_backend: str,
    architecture: Callable[[DeviceProperties], str] | None = None,
    driver_version: str | None = None,
    runtime_version: str | None = None,
    conflicting_env: tuple[str, ...] = (),
    extra: Mapping[str, str] | None = None,
    peak_table: PeakTable = (),
    offload_by_default: bool = True,
    hub_kernels: bool = False,
) -> DeviceInfo:
    """Import ``module_name`` and describe its devices.

    ``architecture(props)`` names a device's architecture (``"sm_90"``); the distinct names are in
    ``extra["arch"]`` (comma-separated, in device order), and each device's memory in
    ``extra["memory_gib"]``. ``peak_table`` (the plugin's published peaks per device model,
    :mod:`rlport.devices.peaks`) fills ``peak_flops`` when every device matches one row.
    ``offload_by_default`` (on: the actor and the engine share one device's memory) and
    ``hub_kernels`` (off) are the :class:`~rlport.types.DeviceInfo` defaults the plugin decides."""
    module = importlib.import_module(module_name)
    count = int(module.device_count())
    props = [properties(module, i) for i in range(count)]
    info_extra: dict[str, str] = {}
    if architecture is not None and props:
        archs = list(dict.fromkeys(architecture(p) for p in props))
        info_extra["arch"] = ",".join(archs)
    if props:
        info_extra["memory_gib"] = ",".join(f"{p.total_memory / 2**30:.1f}" for p in props)
    info_extra.update(extra or {})
    return DeviceInfo(
        device_type=device_type,
        count=count,
        names=tuple(p.name for p in props),
        device_module=module_name,
        visible_devices_env=visible_devices_env,
        ray_resource=ray_resource,
        collectives_backend=collectives_backend,
        driver_version=driver_version,
        runtime_version=runtime_version,
        conflicting_env=conflicting_env,
        extra=info_extra,
        peak_flops=match([p.name for p in props], peak_table),
        offload_by_default=offload_by_default,
        hub_kernels=hub_kernels,
    )
