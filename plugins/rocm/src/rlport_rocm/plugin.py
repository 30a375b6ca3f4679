"""The ``rocm`` device plugin: AMD GPUs through ``torch.cuda`` on a ROCm (HIP) build of torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlport.devices import torch_build
from rlport.devices.module_plugin import DeviceModulePlugin
from rlport.hookspecs import hookimpl
from rlport.types import (
    AttentionBackend,
    AttentionSpec,
    DeviceInfo,
    Finding,
    Manifest,
    ProbeResult,
)
from rlport_rocm import scan as scan_mod
from rlport_rocm import visibility

ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"  # torch's caching allocator reads the same name on ROCm
TORCH_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/rocm<version>"
#: vLLM sets the same on every platform (its weight sync hangs with cuMem-backed NCCL buffers).
RCCL_ENV = {"NCCL_CUMEM_ENABLE": "0"}
#: MI300/MI350-class GPUs: the ones vLLM's sleep mode is known to work on (its platform code says so).
SLEEP_ARCHS = ("gfx942", "gfx950")


class RocmPlugin(DeviceModulePlugin):
    """``sys_root``/``dev_root``/``smi`` point the probe elsewhere (tests); defaults are the real ones."""

    device_ipc = True  # torch.cuda IPC handles (CUDA IPC, HIP IPC on ROCm)

    rlport_manifest = Manifest(
        name="rocm", kind="device", hook_api=">=1.0,<2", description="AMD GPUs through torch.cuda on ROCm"
    )
    check = "rocm"
    platform = "AMD GPUs"
    device_module = "torch.cuda"
    alloc_conf_variable = ALLOC_CONF
    collectives_backend = "nccl"  # RCCL, behind torch's nccl backend; it reads the NCCL_* variables
    collectives_prefix = "NCCL"
    collectives_env_vars = RCCL_ENV
    # ROCm's apex (github.com/ROCm/apex) builds the same amp_C extension for HIP; FusedAdam (AdamW with
    # adam_w_mode=True) needs it at construction, so both must import.
    fused_adamw = ("apex.optimizers:FusedAdam", ("amp_C",), {"adam_w_mode": True})

    def __init__(
        self, *, sys_root: Path | str = "/sys", dev_root: Path | str = "/dev", smi: Any = None
    ) -> None:
        self.sys_root, self.dev_root, self.smi = sys_root, dev_root, smi
        self.scan: scan_mod.AmdScan | None = None
        self.device: DeviceInfo | None = None

    def _scan(self) -> scan_mod.AmdScan:
        if self.scan is None:
            self.scan = scan_mod.scan(sys_root=self.sys_root, dev_root=self.dev_root, smi=self.smi)
        return self.scan

    # -- platform ---------------------------------------------------------------------------------------
    @hookimpl
    def rlport_probe(self) -> ProbeResult:
        self.scan = None
        found = self._scan()
        if not found.gpus:
            return ProbeResult(
                available=False,
                reason="no AMD GPU: the KFD topology (/sys/class/kfd) lists no GPU node"
                + ("" if found.kfd else " and there is no /dev/kfd"),
            )
        archs = ", ".join(found.archs)
        if not found.kfd:
            return ProbeResult(
                available=False,
                reason=f"{len(found.gpus)} AMD GPU(s) ({archs}) in the KFD topology, but no /dev/kfd in this "
                "process (in a container, run it with --device /dev/kfd --device /dev/dri --group-add video)",
            )
        build = torch_build.installed()
        gpus = f"{found.count} AMD GPU(s) ({archs})" + (f" {found.names[0]}" if found.names else "")
        if build is None:
            return ProbeResult(available=False, reason=f"{gpus}, but torch is not installed; {TORCH_INSTALL}")
        if build.runtime("hip") is None:
            return ProbeResult(
                available=False, reason=f"{build.describe()}; install a ROCm build of torch: {TORCH_INSTALL}"
            )
        driver = f", driver {found.driver}" if found.driver else ""
        return ProbeResult(available=True, reason=f"{gpus}{driver}; {build.describe()}", priority=100)

    @hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        import torch

        from rlport.devices.module_info import describe_module
        from rlport_rocm.peaks import TABLE

        found = self._scan()
        self.device = describe_module(
            "torch.cuda",
            "cuda",
            visible_devices_env=visibility.ray_variable(),
            ray_resource="GPU",
            collectives_backend="nccl",
            architecture=lambda p: p.arch_name.split(":")[0] or "unknown",
            driver_version=found.driver,
            runtime_version=torch.version.hip,
            extra={"rccl": self.collectives_version()},
            peak_table=TABLE,
        )
        return self.device

    @hookimpl
    def rlport_doctor(self, device: DeviceInfo) -> list[Finding]:
        return [*self.common_findings(), *visibility.findings(dict(os.environ))]

    def sleep_levels(self, device: DeviceInfo) -> tuple[int, ...]:
        archs = device.extra.get("arch", "").split(",")
        return (1, 2) if archs and all(a in SLEEP_ARCHS for a in archs) else ()

    # -- attention --------------------------------------------------------------------------------------
    @hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        if spec.device_type != "cuda":
            return None
        from rlport_rocm.attention import choose

        return choose(spec, self.arch())

    def arch(self) -> str:
        """The architecture of the first visible GPU (``gcnArchName`` without its feature flags)."""
        if self.device is not None and self.device.extra.get("arch"):
            return self.device.extra["arch"].split(",")[0]
        import torch

        return str(torch.cuda.get_device_properties(0).gcnArchName).split(":")[0]
