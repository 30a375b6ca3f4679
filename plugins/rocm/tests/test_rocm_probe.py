"""The rocm plugin's probe, visibility rules and hooks, against a KFD sysfs tree in a temporary folder,
a fake ``amdsmi``, fake torch builds, a patched ``torch.cuda`` and fake flash-attn modules. ROCm
hardware was never available: nothing here ran on an AMD GPU."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from fake_amd import FakeAmdSmi, machine
from rlport_rocm import RocmPlugin, visibility
from rlport_rocm import attention as rocm_attention
from rlport_rocm import scan as scan_mod

from rlport.attention.flash import FlashAttnBackend
from rlport.attention.sdpa import SdpaKernelBackend
from rlport.devices import allocator, torch_build
from rlport.devices.torch_build import TorchBuild
from rlport.errors import EngineError
from rlport.fakes.flash_attn import FakeFlashAttn
from rlport.types import AttentionSpec, DeviceInfo

MI300 = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", extra={"arch": "gfx942"})
MI250 = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", extra={"arch": "gfx90a"})


@pytest.mark.parametrize(
    ("version", "name"),
    [(90402, "gfx942"), (90010, "gfx90a"), (90500, "gfx950"), (110000, "gfx1100"), (100302, "gfx1032")],
)
def test_gfx_names_from_target_versions(version: int, name: str) -> None:
    assert scan_mod.gfx_name(version) == name


def test_the_kfd_topology_and_amd_smi_are_read_exactly(tmp_path: Path) -> None:
    sys_root, dev_root = machine(tmp_path, (90402, 90402))
    smi = FakeAmdSmi(names=("AMD Instinct MI300X", "AMD Instinct MI300X"))
    found = scan_mod.scan(sys_root=sys_root, dev_root=dev_root, smi=smi.module())
    assert found.count == 2 and found.archs == ("gfx942",) and [g.node for g in found.gpus] == [1, 2]
    assert found.names == ("AMD Instinct MI300X",) * 2 and found.driver == "6.10.5"
    assert smi.calls == [
        ("amdsmi_init", ()),
        ("amdsmi_get_processor_handles", ()),
        ("amdsmi_get_gpu_asic_info", (0,)),
        ("amdsmi_get_gpu_asic_info", (1,)),
        ("amdsmi_get_gpu_driver_info", (0,)),
        ("amdsmi_shut_down", ()),
    ]
    failing = FakeAmdSmi(fail=True)
    found = scan_mod.scan(sys_root=sys_root, dev_root=dev_root, smi=failing.module())
    assert found.names == () and found.driver == "6.8.5"  # the module's own version file
    assert found.amdsmi_error == "AMD SMI failed: RuntimeError: AMDSMI_STATUS_INIT_ERROR"
    assert failing.calls == [("amdsmi_init", ())]  # nothing else asked of a library that did not start


def test_probe_answers_for_each_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = FakeAmdSmi().module()
    sys_root, dev_root = machine(tmp_path / "cpu", ())
    assert RocmPlugin(sys_root=sys_root, dev_root=dev_root, smi=smi).rlport_probe().reason == (
        "no AMD GPU: the KFD topology (/sys/class/kfd) lists no GPU node"
    )
    sys_root, dev_root = machine(tmp_path / "nokfd", (90402,), kfd=False)
    reason = RocmPlugin(sys_root=sys_root, dev_root=dev_root, smi=smi).rlport_probe().reason
    assert reason == (
        "1 AMD GPU(s) (gfx942) in the KFD topology, but no /dev/kfd in this process (in a container, run it "
        "with --device /dev/kfd --device /dev/dri --group-add video)"
    )
    sys_root, dev_root = machine(tmp_path / "mi300", (90402,))
    plugin = RocmPlugin(sys_root=sys_root, dev_root=dev_root, smi=smi)
    monkeypatch.setattr(torch_build, "installed", lambda: TorchBuild("2.13.0+cpu"))
    assert plugin.rlport_probe().reason == (
        "torch 2.13.0+cpu is a CPU build; install a ROCm build of torch: "
        "pip install torch --index-url https://download.pytorch.org/whl/rocm<version>"
    )
    monkeypatch.setattr(torch_build, "installed", lambda: TorchBuild("2.6.0+cu124", {"cuda": "12.4"}))
    assert plugin.rlport_probe().reason.startswith(
        "torch 2.6.0+cu124 is built for cuda 12.4; install a ROCm build"
    )
    monkeypatch.setattr(torch_build, "installed", lambda: TorchBuild("2.6.0+rocm6.2", {"hip": "6.2.41133"}))
    result = plugin.rlport_probe()
    assert result.available and result.priority == 100
    assert result.reason == (
        "1 AMD GPU(s) (gfx942) AMD Instinct MI300X, driver 6.10.5; torch 2.6.0+rocm6.2 is built for hip 6.2.41133"
    )


def test_the_probe_imports_no_torch(tmp_path: Path) -> None:
    sys_root, dev_root = machine(tmp_path, (90402,))
    code = (
        "import sys\nfrom rlport_rocm import RocmPlugin\n"
        f"r = RocmPlugin(sys_root={str(sys_root)!r}, dev_root={str(dev_root)!r}).rlport_probe()\n"
        "print(r.available, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


@pytest.mark.parametrize(
    ("env", "problems", "fixes"),
    [
        ({}, [], []),
        ({"HIP_VISIBLE_DEVICES": "0,1"}, [], []),
        ({"HIP_VISIBLE_DEVICES": "0,1", "CUDA_VISIBLE_DEVICES": "0, 1"}, [], []),
        (
            {"ROCR_VISIBLE_DEVICES": "2,3"},
            [
                "ROCR_VISIBLE_DEVICES='2,3' is set without HIP_VISIBLE_DEVICES: Ray refuses it and vLLM ignores it"
            ],
            ["export HIP_VISIBLE_DEVICES=2,3; unset ROCR_VISIBLE_DEVICES"],
        ),
        (
            {"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "1"},
            [
                "ROCR_VISIBLE_DEVICES='2,3' and HIP_VISIBLE_DEVICES='1' are both set: HIP_VISIBLE_DEVICES then "
                "indexes into the devices ROCR_VISIBLE_DEVICES left, which Ray and vLLM do not expect"
            ],
            ["export HIP_VISIBLE_DEVICES=3; unset ROCR_VISIBLE_DEVICES"],
        ),
        (
            {"ROCR_VISIBLE_DEVICES": "2,3", "HIP_VISIBLE_DEVICES": "5", "CUDA_VISIBLE_DEVICES": "5"},
            [
                "ROCR_VISIBLE_DEVICES='2,3' and HIP_VISIBLE_DEVICES='5' are both set: HIP_VISIBLE_DEVICES then "
                "indexes into the devices ROCR_VISIBLE_DEVICES left, which Ray and vLLM do not expect"
            ],
            [
                "choose the devices in HIP_VISIBLE_DEVICES only; unset ROCR_VISIBLE_DEVICES CUDA_VISIBLE_DEVICES"
            ],
        ),
        (
            {"HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "1"},
            ["HIP_VISIBLE_DEVICES='0' and CUDA_VISIBLE_DEVICES='1' disagree: vLLM asserts they are equal"],
            ["unset CUDA_VISIBLE_DEVICES (vLLM copies HIP_VISIBLE_DEVICES into it)"],
        ),
        (
            {"CUDA_VISIBLE_DEVICES": "0,1"},
            [
                "CUDA_VISIBLE_DEVICES='0,1' is set without HIP_VISIBLE_DEVICES: Ray sets HIP_VISIBLE_DEVICES per "
                "worker and vLLM then finds the two disagree"
            ],
            ["export HIP_VISIBLE_DEVICES=0,1; unset CUDA_VISIBLE_DEVICES"],
        ),
        (
            {"RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES": "True"},
            [
                "RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES='True': Ray will not set HIP_VISIBLE_DEVICES per worker, "
                "so every rlport worker sees all devices and uses the first"
            ],
            ["unset RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES"],
        ),
        ({"RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES": "0"}, [], []),
    ],
)
def test_visibility_rules(env: dict[str, str], problems: list[str], fixes: list[str]) -> None:
    found = visibility.findings(env, ray_version="2.60.0")
    assert [f.problem for f in found] == problems and [f.fix for f in found] == fixes
    assert all(f.check == "rocm" for f in found)


def test_older_ray_sets_rocr_and_its_noset_is_the_one_checked() -> None:
    assert visibility.ray_variable("2.44.1") == "ROCR_VISIBLE_DEVICES"
    assert visibility.ray_variable("2.45.0") == "HIP_VISIBLE_DEVICES"
    (found,) = visibility.findings({"RAY_EXPERIMENTAL_NOSET_ROCR_VISIBLE_DEVICES": "1"}, ray_version="2.40.0")
    assert found.fix == "unset RAY_EXPERIMENTAL_NOSET_ROCR_VISIBLE_DEVICES"


def test_doctor_reports_visibility_and_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "sleep_engine_installed", lambda: True)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "garbage_collection_threshold:0.8,expandable_segments:True")
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "0")
    for key in ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    findings = RocmPlugin().rlport_doctor(MI300)
    assert [f.fix.split(" ")[1] for f in findings] == [
        "PYTORCH_CUDA_ALLOC_CONF=garbage_collection_threshold:0.8",
        "HIP_VISIBLE_DEVICES=0;",
    ]


def test_device_info_reads_the_gcn_arch_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    props = types.SimpleNamespace(
        name="AMD Instinct MI300X",
        total_memory=192 * 2**30,
        major=9,
        minor=4,
        gcnArchName="gfx942:sramecc+:xnack-",
    )
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 20, 5))
    sys_root, dev_root = machine(tmp_path, (90402,))
    plugin = RocmPlugin(sys_root=sys_root, dev_root=dev_root, smi=FakeAmdSmi().module())
    info = plugin.rlport_device_info()
    assert info.names == ("AMD Instinct MI300X",) and info.runtime_version == "6.2.41133"
    assert info.extra == {"arch": "gfx942", "memory_gib": "192.0", "rccl": "2.20.5"}
    assert (info.ray_resource, info.collectives_backend, info.driver_version) == ("GPU", "nccl", "6.10.5")
    assert info.visible_devices_env == visibility.ray_variable()
    assert plugin.arch() == "gfx942"


def test_attention_ck_triton_and_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeFlashAttn()
    monkeypatch.setitem(sys.modules, "flash_attn", fake.module("flash_attn"))
    spec = AttentionSpec(dtype="bfloat16", head_dim=128, num_heads=8, num_kv_heads=8, device_type="cuda")
    windowed = AttentionSpec(
        dtype="bfloat16", head_dim=128, num_heads=8, num_kv_heads=8, window=4, device_type="cuda"
    )
    ck = rocm_attention.choose(spec, "gfx942", env={})
    assert isinstance(ck, FlashAttnBackend) and ck.name == "flash_attn_2_ck"
    assert isinstance(rocm_attention.choose(windowed, "gfx942", env={}), FlashAttnBackend)
    assert isinstance(rocm_attention.choose(spec, "gfx1030", env={}), SdpaKernelBackend)
    triton_env = {"FLASH_ATTENTION_TRITON_AMD_ENABLE": "TRUE"}
    triton = rocm_attention.choose(spec, "gfx1030", env=triton_env)
    assert isinstance(triton, FlashAttnBackend) and triton.name == "flash_attn_2_triton"
    assert isinstance(rocm_attention.choose(windowed, "gfx942", env=triton_env), SdpaKernelBackend)
    q = torch.randn(2, 8, 3, 128).bfloat16()
    ck.forward(q, q, q, causal=True, scale=0.1)
    assert fake.calls[0].kwargs["softmax_scale"] == 0.1 and fake.calls[0].shapes[0] == (2, 3, 8, 128)


def test_vllm_sleep_mode_only_on_mi300_class_gpus() -> None:
    plugin = RocmPlugin()
    assert plugin.rlport_engine_args("vllm", {}, MI300) == {
        "gpu_memory_utilization": 0.5,
        "enable_sleep_mode": True,
    }
    assert plugin.rlport_engine_args("vllm", {}, MI250) == {
        "gpu_memory_utilization": 0.5,
        "enable_sleep_mode": False,
    }
    with pytest.raises(EngineError, match="vLLM has no sleep mode on AMD GPUs"):
        plugin.rlport_engine_args("vllm", {"enable_sleep_mode": True}, MI250)


def test_rocm_hands_weights_over_through_device_ipc() -> None:
    from rlport_rocm import RocmPlugin

    from rlport.rollout.transport import DeviceIpcTransport
    from rlport.types import DeviceInfo, EnginePlacement

    mi300 = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", extra={"arch": "gfx942"})
    transport = RocmPlugin().rlport_weight_transport("vllm", mi300, EnginePlacement(False, True))
    assert isinstance(transport, DeviceIpcTransport) and transport.device_type == "cuda"
