"""The NPU as a :class:`~rlport.types.DeviceInfo`, through ``torch.npu`` and the core's device-module
helpers (:mod:`rlport.devices.module_info`).

``import torch_npu`` registers ``torch.npu`` (``torch._register_device_module("npu", torch_npu.npu)``,
torch_npu/_init/registry/backend.py); it is imported here explicitly, since rlport may have switched
torch's autoload off. Ray schedules workers on the resource ``"NPU"`` and sets
``ASCEND_RT_VISIBLE_DEVICES`` per worker (ray/_private/accelerators/npu.py) unless
``RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES`` is set.
"""

from __future__ import annotations

from rlport.devices.module_info import describe_module
from rlport.types import DeviceInfo
from rlport_ascend.probe import detect

VISIBLE = "ASCEND_RT_VISIBLE_DEVICES"
RAY_RESOURCE = "NPU"
BACKEND = "hccl"


def device_info() -> DeviceInfo:
    import torch_npu

    toolkit = detect().toolkit
    return describe_module(
        "torch.npu",
        "npu",
        visible_devices_env=VISIBLE,
        ray_resource=RAY_RESOURCE,
        collectives_backend=BACKEND,
        runtime_version=f"torch_npu {torch_npu.__version__}",
        extra={"cann_toolkit": str(toolkit)} if toolkit else None,
    )
