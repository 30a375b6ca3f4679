"""The ``simdev`` rlport device plugin: rlport on the simulated accelerator.

Written the way a vendor writes one, from docs/plugin_hooks.md and the ``rlport new-plugin``
scaffold, on the core's ``DeviceModulePlugin`` (memory, allocator, collectives preflight,
capabilities from the class attributes). Cheap to import: the device is built and registered in
``rlport_device_info``, never at import or in the probe.

The device is opt-in (``RLPORT_SIMDEV=1``): installed next to the cpu plugin, it must not take
over a machine's runs by itself.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from rlport.devices import torch_build
from rlport.devices.module_plugin import DeviceModulePlugin
from rlport.hookspecs import hookimpl
from rlport.types import (
    AllocatorSettings,
    AttentionBackend,
    AttentionSpec,
    Capabilities,
    DeviceInfo,
    Finding,
    Manifest,
    ProbeResult,
)

ENABLE = "RLPORT_SIMDEV"
DEVICES = "RLPORT_SIMDEV_DEVICES"
PRIORITY = 100


def _configured_count() -> int:
    """The device count the runtime will have: configuration, so the probe knows it without torch."""
    try:
        return int(os.environ.get(DEVICES, "2"))
    except ValueError:
        return 0


class SimdevPlugin(DeviceModulePlugin):
    rlport_manifest = Manifest(
        name="simdev",
        kind="device",
        hook_api=">=1.0,<2",
        description="simdev, rlport's simulated accelerator (PrivateUse1; memory the host cannot address)",
    )
    check = "simdev"
    platform = "simdev (simulated accelerator)"
    device_module = "torch.simdev"
    alloc_conf_variable = ""  # the runtime has no allocator settings (see rlport_allocator_settings)
    collectives_backend = "simdev"
    collectives_prefix = "SIMDEV"
    attention_dtypes = ("bfloat16", "float16", "float32")
    collectives = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
    unsupported_strategies = {  # noqa: RUF012 (read-only class attribute)
        "megatron": "megatron-core's forward needs CUDA; simdev runs replicated, ddp and fsdp"
    }

    # -- platform ---------------------------------------------------------------------------------------
    @hookimpl
    def rlport_probe(self) -> ProbeResult:
        if os.environ.get(ENABLE) != "1":
            return ProbeResult(False, f"simdev is opt-in: export {ENABLE}=1", PRIORITY)
        missing = [tool for tool in ("g++", "ninja") if shutil.which(tool) is None]
        if missing:
            return ProbeResult(
                False,
                f"{' and '.join(missing)} not on PATH: the simdev runtime is compiled on first use",
                PRIORITY,
            )
        build = torch_build.installed()
        if build is None:
            return ProbeResult(False, "torch is not installed", PRIORITY)
        count = _configured_count()
        if count < 1:
            return ProbeResult(
                False, f"{DEVICES}={os.environ.get(DEVICES)!r}: expected a count of 1 or more", PRIORITY
            )
        return ProbeResult(True, f"{count} simulated device(s) ({ENABLE}=1); {build.describe()}", PRIORITY)

    @hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        import torch

        import rlport_simdev
        from rlport.devices.module_info import describe_module
        from rlport_simdev import _build

        rlport_simdev.register()
        return describe_module(
            "torch.simdev",
            "simdev",
            visible_devices_env=None,  # every process sees every simulated device
            ray_resource=None,  # Ray knows no "simdev" resource: workers are placed by CPUs
            collectives_backend="simdev",
            runtime_version=torch.__version__,
            extra={"build_dir": str(_build.build_dir())},
        )

    @hookimpl
    def rlport_worker_env(self, device: DeviceInfo) -> dict[str, str]:
        # Workers are new processes: they must probe the same device (RLPORT_* variables are
        # forwarded by the trainer too; this covers any other launcher).
        env = {ENABLE: "1", DEVICES: str(device.count)}
        for key in ("RLPORT_SIMDEV_MEMORY", "RLPORT_SIMDEV_BUILD_DIR"):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env

    @hookimpl
    def rlport_doctor(self, device: DeviceInfo) -> list[Finding]:
        return self.common_findings()

    def collectives_version(self) -> str:
        import torch

        return f"gloo staging (torch {torch.__version__})"

    def sleep_levels(self, device: DeviceInfo) -> tuple[int, ...]:
        return ()  # no vLLM on this device

    @hookimpl
    def rlport_allocator_settings(self, phase: str) -> AllocatorSettings:
        return AllocatorSettings(note="simdev's allocator has no settings")

    @hookimpl
    def rlport_capabilities(self) -> Capabilities:
        # The base class's claims, plus avg: the backend sums through gloo and divides on the host.
        base = super().rlport_capabilities()
        return dataclasses.replace(base, reduce_ops=(*base.reduce_ops, "avg"))

    @hookimpl
    def rlport_optimizer(self, name: str, device: DeviceInfo, strategy: str):
        # simdev's "fused" AdamW is torch's fused host kernel run through the fallback; the core keeps
        # the host on the foreach path (its fused kernel rounds differently and changes the seeded
        # demo), and so does this device, so that its runs equal the cpu plugin's step for step.
        if name != "adamw":
            return None
        import torch

        from rlport.optim import OptimizerFactory

        return OptimizerFactory(torch.optim.AdamW, label="torch AdamW (foreach)", options={"foreach": True})

    # -- attention --------------------------------------------------------------------------------------
    @hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        # The device has no attention kernel of its own: torch SDPA runs through its fallback.
        if spec.device_type != "simdev":
            return None
        from rlport.attention.sdpa import backend_for

        return backend_for(spec)


plugin = SimdevPlugin()
