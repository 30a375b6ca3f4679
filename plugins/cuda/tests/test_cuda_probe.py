"""The cuda plugin's probe and device info, against a fake NVML (``fake_nvml``), driver files in a
temporary folder, fake torch builds and a patched ``torch.cuda``. No NVIDIA GPU was used."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from fake_nvml import FakeNvml
from rlport_cuda import CudaPlugin
from rlport_cuda import scan as scan_mod

from rlport.devices import torch_build
from rlport.devices.torch_build import TorchBuild

PROC_VERSION = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
)


def machine(tmp_path: Path, gpus: int, *, driver: bool = True) -> tuple[Path, Path]:
    dev, proc = tmp_path / "dev", tmp_path / "proc"
    dev.mkdir(parents=True)
    for name in [*(f"nvidia{i}" for i in range(gpus)), "nvidiactl", "nvidia-uvm", "null"]:
        (dev / name).touch()
    if driver:
        (proc / "driver" / "nvidia").mkdir(parents=True)
        (proc / "driver" / "nvidia" / "version").write_text(PROC_VERSION)
    return dev, proc


def build(version: str, **runtimes: str) -> TorchBuild:
    return TorchBuild(version=version, runtimes=dict(runtimes))


def test_nvml_is_asked_exactly_and_shut_down(tmp_path: Path) -> None:
    nvml = FakeNvml()
    found = scan_mod.scan(dev_root=tmp_path, proc_root=tmp_path, nvml=nvml.module())
    assert found == scan_mod.NvidiaScan(
        count=2,
        names=("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"),
        driver="550.54.15",
        cuda_driver="12.4",
        capabilities=((9, 0), (9, 0)),
        source="NVML",
    )
    assert nvml.calls[0] == ("nvmlInit", ()) and nvml.calls[-1] == ("nvmlShutdown", ())
    assert [c for c in nvml.calls if c[0] == "nvmlDeviceGetHandleByIndex"] == [
        ("nvmlDeviceGetHandleByIndex", (0,)),
        ("nvmlDeviceGetHandleByIndex", (1,)),
    ]


def test_a_cpu_build_of_torch_is_unavailable_with_the_install_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch_build, "installed", lambda: build("2.13.0+cpu"))
    result = CudaPlugin(dev_root=tmp_path, proc_root=tmp_path, nvml=FakeNvml().module()).rlport_probe()
    assert not result.available
    assert result.reason == (
        "torch 2.13.0+cpu is a CPU build; install a CUDA build of torch matching driver 550 (CUDA 12.4 at most): "
        "pip install torch --index-url https://download.pytorch.org/whl/cuXYZ with XYZ <= 124 "
        "(https://pytorch.org/get-started/locally/)"
    )


def test_a_rocm_build_is_named_and_torch_missing_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = CudaPlugin(dev_root=tmp_path, proc_root=tmp_path, nvml=FakeNvml().module())
    monkeypatch.setattr(torch_build, "installed", lambda: build("2.6.0+rocm6.2", hip="6.2.41133"))
    assert plugin.rlport_probe().reason.startswith(
        "torch 2.6.0+rocm6.2 is built for hip 6.2.41133; install a CUDA"
    )
    monkeypatch.setattr(torch_build, "installed", lambda: None)
    reason = plugin.rlport_probe().reason
    assert reason.startswith("2 NVIDIA GPU(s) via NVML (NVIDIA H100 80GB HBM3), but torch is not installed;")


def test_a_cuda_build_with_gpus_is_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_build, "installed", lambda: build("2.6.0+cu124", cuda="12.4"))
    result = CudaPlugin(dev_root=tmp_path, proc_root=tmp_path, nvml=FakeNvml().module()).rlport_probe()
    assert result.available and result.priority == 100
    assert result.reason == (
        "2 NVIDIA GPU(s) via NVML (NVIDIA H100 80GB HBM3), driver 550.54.15; torch 2.6.0+cu124 is built for cuda 12.4"
    )
    assert result.env == {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}


def test_without_nvml_the_device_files_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dev, proc = machine(tmp_path, 3)
    nvml = FakeNvml(fail_init=True)
    found = scan_mod.scan(dev_root=dev, proc_root=proc, nvml=nvml.module())
    assert (found.count, found.driver, found.source) == (3, "550.54.15", "device files")
    assert found.nvml_error == "NVML failed: NVMLError_LibraryNotFound: NVML Shared Library Not Found"
    assert nvml.calls == [("nvmlInit", ())]  # nothing else asked of a library that did not load
    monkeypatch.setattr(torch_build, "installed", lambda: build("2.13.0+cpu"))
    reason = CudaPlugin(dev_root=dev, proc_root=proc, nvml=nvml.module()).rlport_probe().reason
    assert reason.startswith(
        "torch 2.13.0+cpu is a CPU build; install a CUDA build of torch matching driver 550 ("
    )


def test_a_container_without_gpus_names_the_host_driver_and_the_flag(tmp_path: Path) -> None:
    dev, proc = machine(tmp_path, 0)
    result = CudaPlugin(dev_root=dev, proc_root=proc, nvml=FakeNvml(fail_init=True).module()).rlport_probe()
    assert not result.available
    assert result.reason.startswith(
        "no NVIDIA GPU visible: no /dev/nvidia<N> device files, though driver 550.54.15 is loaded on the host "
        "(in a container, run it with --gpus all); NVML failed"
    )
    dev, proc = machine(tmp_path / "bare", 0, driver=False)
    reason = (
        CudaPlugin(dev_root=dev, proc_root=proc, nvml=FakeNvml(fail_init=True).module()).rlport_probe().reason
    )
    assert reason.startswith(
        "no NVIDIA GPU: no NVIDIA driver (no /dev/nvidia<N>, no /proc/driver/nvidia/version)"
    )


def test_the_probe_imports_neither_torch_nor_nvml_when_absent(tmp_path: Path) -> None:
    dev, proc = machine(tmp_path, 1)
    code = (
        "import sys\nfrom rlport_cuda import CudaPlugin\n"
        f"r = CudaPlugin(dev_root={str(dev)!r}, proc_root={str(proc)!r}).rlport_probe()\n"
        "print(r.available, 'torch' in sys.modules)\nprint(r.reason)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, reason = out.splitlines()[:2]
    assert first == "False False"
    assert reason.startswith(
        f"torch {torch.__version__} is a CPU build; install a CUDA build of torch matching driver 550"
    )


def test_device_info_from_a_patched_torch_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, major=9, minor=0)
    asked: list[int] = []

    def get_props(i: int) -> types.SimpleNamespace:
        asked.append(i)
        return props

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", get_props)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    plugin = CudaPlugin(dev_root=tmp_path, proc_root=tmp_path, nvml=FakeNvml().module())
    plugin.rlport_probe()
    info = plugin.rlport_device_info()
    assert asked == [0, 1]
    assert (info.device_type, info.count, info.device_module) == ("cuda", 2, "torch.cuda")
    assert info.names == ("NVIDIA H100 80GB HBM3",) * 2
    assert (info.visible_devices_env, info.ray_resource, info.collectives_backend) == (
        "CUDA_VISIBLE_DEVICES",
        "GPU",
        "nccl",
    )
    assert (info.driver_version, info.runtime_version) == ("550.54.15", "12.4")
    assert info.extra == {"arch": "sm_90", "memory_gib": "80.0,80.0", "nccl": "2.21.5", "driver_cuda": "12.4"}
