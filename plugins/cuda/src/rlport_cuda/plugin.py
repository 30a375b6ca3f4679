"""The ``cuda`` device plugin: NVIDIA GPUs through ``torch.cuda`` on a CUDA build of torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlport.devices import torch_build, visible
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
from rlport_cuda import scan as scan_mod

VISIBLE = "CUDA_VISIBLE_DEVICES"
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
TORCH_INSTALL = "https://pytorch.org/get-started/locally/"
#: vLLM's weight sync over NCCL hangs with NCCL's cuMem allocations (verl sets the same).
NCCL_ENV = {"NCCL_CUMEM_ENABLE": "0"}


class CudaPlugin(DeviceModulePlugin):
    """``dev_root``/``proc_root``/``nvml`` point the probe elsewhere (tests); defaults are the real ones."""

    device_ipc = True  # torch.cuda IPC handles (CUDA IPC, HIP IPC on ROCm)

    rlport_manifest = Manifest(
        name="cuda", kind="device", hook_api=">=1.0,<2", description="NVIDIA GPUs through torch.cuda"
    )
    check = "cuda"
    platform = "NVIDIA GPUs"
    device_module = "torch.cuda"
    alloc_conf_variable = ALLOC_CONF
    collectives_backend = "nccl"
    collectives_prefix = "NCCL"
    collectives_env_vars = NCCL_ENV
    # apex's FusedAdam (AdamW with adam_w_mode=True) calls the multi_tensor_adam kernel of amp_C, the
    # extension apex builds with --cuda_ext; without it the constructor raises, so both must import.
    fused_adamw = ("apex.optimizers:FusedAdam", ("amp_C",), {"adam_w_mode": True})

    def __init__(
        self, *, dev_root: Path | str = "/dev", proc_root: Path | str = "/proc", nvml: Any = None
    ) -> None:
        self.dev_root, self.proc_root, self.nvml = dev_root, proc_root, nvml
        self.scan: scan_mod.NvidiaScan | None = None
        self.device: DeviceInfo | None = None

    # -- platform ---------------------------------------------------------------------------------------
    @hookimpl
    def rlport_probe(self) -> ProbeResult:
        found = self.scan = scan_mod.scan(dev_root=self.dev_root, proc_root=self.proc_root, nvml=self.nvml)
        if found.count == 0:
            return ProbeResult(available=False, reason=no_gpu_reason(found))
        build = torch_build.installed()
        gpus = f"{found.count} NVIDIA GPU(s) via {found.source}" + (
            f" ({found.names[0]})" if found.names else ""
        )
        driver = f"driver {found.driver}" if found.driver else "an unknown driver version"
        if build is None:
            return ProbeResult(
                available=False, reason=f"{gpus}, but torch is not installed; {install_hint(found)}"
            )
        if build.runtime("cuda") is None:
            return ProbeResult(available=False, reason=f"{build.describe()}; {install_hint(found)}")
        return ProbeResult(
            available=True,
            reason=f"{gpus}, {driver}; {build.describe()}",
            priority=100,
            # torch.cuda.is_available() asks NVML instead of initialising CUDA, so forked workers stay usable.
            env={"PYTORCH_NVML_BASED_CUDA_CHECK": "1"},
        )

    @hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        import torch

        from rlport.devices.module_info import describe_module
        from rlport_cuda.peaks import TABLE

        found = self.scan or scan_mod.scan(dev_root=self.dev_root, proc_root=self.proc_root, nvml=self.nvml)
        extra = {"nccl": self.collectives_version()}
        if found.cuda_driver:
            extra["driver_cuda"] = found.cuda_driver
        self.device = describe_module(
            "torch.cuda",
            "cuda",
            visible_devices_env=VISIBLE,
            ray_resource="GPU",
            collectives_backend="nccl",
            architecture=lambda p: f"sm_{p.major}{p.minor}",
            driver_version=found.driver,
            runtime_version=torch.version.cuda,
            extra=extra,
            peak_table=TABLE,
        )
        return self.device

    @hookimpl
    def rlport_doctor(self, device: DeviceInfo) -> list[Finding]:
        return [*self.common_findings(), *doctor_findings(dict(os.environ), self.scan)]

    # -- attention --------------------------------------------------------------------------------------
    @hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        if spec.device_type != "cuda":
            return None
        from rlport_cuda.attention import choose

        return choose(spec, self.capability())

    def capability(self) -> tuple[int, int]:
        """The compute capability of the first visible GPU."""
        import torch

        return tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]


def install_hint(found: scan_mod.NvidiaScan) -> str:
    """What to install for a GPU the installed torch cannot use."""
    if found.driver_major and found.cuda_driver:
        most = found.cuda_driver.replace(".", "")
        return (
            f"install a CUDA build of torch matching driver {found.driver_major} (CUDA {found.cuda_driver} at most): "
            f"pip install torch --index-url https://download.pytorch.org/whl/cuXYZ with XYZ <= {most} ({TORCH_INSTALL})"
        )
    if found.driver_major:
        return f"install a CUDA build of torch matching driver {found.driver_major} ({TORCH_INSTALL})"
    return f"install a CUDA build of torch ({TORCH_INSTALL})"


def no_gpu_reason(found: scan_mod.NvidiaScan) -> str:
    """Why no GPU was found, in words that say where to look."""
    nvml = f"; {found.nvml_error}" if found.nvml_error else ""
    if found.driver:
        return (
            f"no NVIDIA GPU visible: no /dev/nvidia<N> device files, though driver {found.driver} is loaded on "
            f"the host (in a container, run it with --gpus all){nvml}"
        )
    return (
        "no NVIDIA GPU: no NVIDIA driver (no /dev/nvidia<N>, no /proc/driver/nvidia/version): install the "
        f"NVIDIA driver, or run the container with --gpus all{nvml}"
    )


def doctor_findings(env: dict[str, str], found: scan_mod.NvidiaScan | None) -> list[Finding]:
    """The CUDA-specific rules: Ray told not to assign GPUs, and a torch built for a newer CUDA major
    version than the driver supports."""
    noset = visible.ray_noset_finding(VISIBLE, "cuda", env)
    out = [noset] if noset else []
    build = torch_build.installed()
    built = build.runtime("cuda") if build else None
    if built and found and found.cuda_driver and _newer(built, found.cuda_driver):
        out.append(
            Finding(
                "cuda",
                f"torch {build.version} is built for CUDA {built}, but driver {found.driver} supports CUDA "
                f"{found.cuda_driver} at most",
                f"upgrade the NVIDIA driver, or {install_hint(found)}",
            )
        )
    return out


def _newer(a: str, b: str) -> bool:
    """True when CUDA ``a`` has a newer major version than ``b`` (within one major version, CUDA's
    minor-version compatibility lets a newer runtime run on an older driver)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a).release[0] > Version(b).release[0]
    except InvalidVersion:
        return False
