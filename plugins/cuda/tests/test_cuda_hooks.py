"""The cuda plugin's hooks past the probe: attention choice against fake flash-attn modules
(``rlport.fakes.flash_attn``, torch math on the host, every argument recorded), memory through a
patched ``torch.cuda``, allocator phases, doctor rules, vLLM arguments and the collectives preflight
(on a one-rank gloo group standing in for NCCL). No NVIDIA GPU, flash-attn kernel or NCCL ran."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from rlport_cuda import CudaPlugin
from rlport_cuda import attention as cuda_attention
from rlport_cuda.plugin import doctor_findings
from rlport_cuda.scan import NvidiaScan

from rlport import bootstrap
from rlport.attention.flash import FlashAttnBackend
from rlport.attention.sdpa import SdpaBackend, SdpaKernelBackend
from rlport.devices import allocator, torch_build
from rlport.devices.torch_build import TorchBuild
from rlport.errors import EngineError
from rlport.fakes.flash_attn import FakeFlashAttn
from rlport.memory import TaggedMemory
from rlport.types import AttentionSpec, DeviceInfo

SPEC = AttentionSpec(dtype="bfloat16", head_dim=128, num_heads=8, num_kv_heads=2, device_type="cuda")
H100 = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", extra={"arch": "sm_90"})


@pytest.fixture
def fa2(monkeypatch: pytest.MonkeyPatch) -> FakeFlashAttn:
    fake = FakeFlashAttn()
    monkeypatch.setitem(sys.modules, "flash_attn", fake.module("flash_attn"))
    return fake


@pytest.fixture
def fa3(monkeypatch: pytest.MonkeyPatch) -> FakeFlashAttn:
    fake = FakeFlashAttn(returns_lse=True)
    monkeypatch.setitem(sys.modules, "flash_attn_interface", fake.module("flash_attn_interface"))
    return fake


def test_hopper_takes_flash_attention_3_and_ampere_flash_attention_2(
    fa2: FakeFlashAttn, fa3: FakeFlashAttn
) -> None:
    hopper = cuda_attention.choose(SPEC, (9, 0))
    ampere = cuda_attention.choose(SPEC, (8, 0))
    assert isinstance(hopper, FlashAttnBackend) and hopper.name == "flash_attn_3"
    assert isinstance(ampere, FlashAttnBackend) and ampere.name == "flash_attn_2"
    q = torch.randn(1, 8, 5, 128).bfloat16()
    k = torch.randn(1, 2, 9, 128).bfloat16()
    out = hopper.forward(q, k, k, causal=True)
    (call,) = fa3.calls
    assert call.shapes == ((1, 5, 8, 128), (1, 9, 2, 128), (1, 9, 2, 128))
    assert call.kwargs["causal"] is True and call.kwargs["window_size"] == (-1, -1)
    assert call.kwargs["softmax_scale"] == 128**-0.5
    ref = SdpaBackend().forward(q.double(), k.double(), k.double(), causal=True)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2)
    assert fa2.calls == []
    ampere.forward(q, k, k, causal=False, scale=0.5)
    assert fa2.calls[0].kwargs["softmax_scale"] == 0.5 and fa2.calls[0].kwargs["causal"] is False


def test_without_flash_attn_or_on_older_gpus_sdpa_with_named_kernels_serves(fa2: FakeFlashAttn) -> None:
    turing = cuda_attention.choose(SPEC, (7, 5))
    assert isinstance(turing, SdpaKernelBackend) and turing.kernels == (
        "FLASH_ATTENTION",
        "EFFICIENT_ATTENTION",
        "MATH",
    )
    fp32 = cuda_attention.choose(
        AttentionSpec(dtype="float32", head_dim=64, num_heads=4, num_kv_heads=4), (9, 0)
    )
    assert isinstance(fp32, SdpaKernelBackend) and fp32.kernels == ("EFFICIENT_ATTENTION", "MATH")
    big = cuda_attention.choose(
        AttentionSpec(dtype="float16", head_dim=512, num_heads=4, num_kv_heads=4), (9, 0)
    )
    assert isinstance(big, SdpaKernelBackend)
    windowed = cuda_attention.choose(
        AttentionSpec(dtype="float16", head_dim=64, num_heads=4, num_kv_heads=4, window=8), (8, 6)
    )
    assert isinstance(windowed, FlashAttnBackend) and windowed.window == 8 and windowed.fallback.window == 8


def test_specs_nothing_can_serve_are_none_and_other_devices_are_left_alone(fa2: FakeFlashAttn) -> None:
    dropout = AttentionSpec(
        dtype="bfloat16", head_dim=64, num_heads=4, num_kv_heads=4, dropout=True, device_type="cuda"
    )
    uneven = AttentionSpec(dtype="bfloat16", head_dim=64, num_heads=6, num_kv_heads=4, device_type="cuda")
    assert cuda_attention.choose(dropout, (9, 0)) is None and cuda_attention.choose(uneven, (9, 0)) is None
    plugin = CudaPlugin()
    assert (
        plugin.rlport_attention_backend(
            AttentionSpec(dtype="bfloat16", head_dim=64, num_heads=4, num_kv_heads=4)
        )
        is None
    )


def test_the_hook_asks_the_gpu_capability_once_per_spec(
    fa2: FakeFlashAttn, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: asked.append(i) or (8, 0))
    backend = CudaPlugin().rlport_attention_backend(SPEC)
    assert isinstance(backend, FlashAttnBackend) and backend.name == "flash_attn_2" and asked == [0]


def test_memory_goes_through_torch_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        torch.cuda, "mem_get_info", lambda: calls.append("mem_get_info") or (30 * 2**30, 80 * 2**30)
    )
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # no pinned memory without a CUDA runtime
    backend = CudaPlugin().rlport_memory_backend(H100)
    info = backend.mem_info()
    assert (info.free_bytes, info.total_bytes, backend.name) == (30 * 2**30, 80 * 2**30, "torch.cuda")
    weights = torch.randn(64, 64)
    expected = weights.clone()
    memory = TaggedMemory(backend)
    memory.register("weights", weights)
    assert memory.sleep("weights") == 64 * 64 * 4 and weights.untyped_storage().nbytes() == 0
    memory.wake_up("weights")
    assert torch.equal(weights, expected) and calls == ["mem_get_info", "empty_cache"]


def test_allocator_phases_follow_whether_a_sleep_mode_engine_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = CudaPlugin()
    monkeypatch.setattr(allocator, "sleep_engine_installed", lambda: False)
    assert plugin.rlport_allocator_settings("training").env == {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"
    }
    assert plugin.rlport_allocator_settings("rollout").env == {}
    monkeypatch.setattr(allocator, "sleep_engine_installed", lambda: True)
    assert plugin.rlport_allocator_settings("training").env == {}


def test_doctor_flags_the_sleep_breaking_allocator_noset_and_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "sleep_engine_installed", lambda: True)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("NCCL_CUMEM_ENABLE", "1")
    findings = CudaPlugin().rlport_doctor(H100)
    assert [f.problem.split(" ")[0] for f in findings] == [
        "PYTORCH_CUDA_ALLOC_CONF='expandable_segments:True'",
        "NCCL_CUMEM_ENABLE='1'",
        "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES='1':",
    ]
    assert (
        findings[0].fix.startswith("unset PYTORCH_CUDA_ALLOC_CONF")
        and findings[1].fix == "export NCCL_CUMEM_ENABLE=0"
    )
    assert findings[2].fix == "unset RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"
    for key in (
        "PYTORCH_CUDA_ALLOC_CONF",
        "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES",
        "NCCL_CUMEM_ENABLE",
    ):
        monkeypatch.delenv(key)
    assert CudaPlugin().rlport_doctor(H100) == []


def test_doctor_flags_a_torch_built_for_a_newer_cuda_major_than_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = NvidiaScan(count=1, driver="535.104.05", cuda_driver="12.2", source="NVML")
    monkeypatch.setattr(torch_build, "installed", lambda: TorchBuild("2.13.0+cu130", {"cuda": "13.0"}))
    (finding,) = doctor_findings({}, found)
    assert "built for CUDA 13.0, but driver 535.104.05 supports CUDA 12.2 at most" in finding.problem
    monkeypatch.setattr(torch_build, "installed", lambda: TorchBuild("2.13.0+cu128", {"cuda": "12.8"}))
    assert doctor_findings({}, found) == []  # minor-version compatibility within CUDA 12


def test_vllm_arguments_on_gpus() -> None:
    plugin = CudaPlugin()
    assert plugin.rlport_engine_args("vllm", {}, H100) == {
        "gpu_memory_utilization": 0.5,
        "enable_sleep_mode": True,
    }
    assert plugin.rlport_engine_args("vllm", {"gpu_memory_utilization": 0.3, "sleep_level": 2}, H100) == {
        "enable_sleep_mode": True
    }
    assert plugin.rlport_engine_args("vllm", {"enable_sleep_mode": False}, H100) == {
        "gpu_memory_utilization": 0.5
    }
    assert plugin.rlport_engine_args("hf", {}, H100) is None
    with pytest.raises(
        EngineError, match=r"sleep_level=3 is not a sleep level of vLLM on NVIDIA GPUs \(levels: 1, 2\)"
    ):
        plugin.rlport_engine_args("vllm", {"sleep_level": 3}, H100)
    with pytest.raises(EngineError, match=r"gpu_memory_utilization=1.5 must be a fraction"):
        plugin.rlport_engine_args("vllm", {"gpu_memory_utilization": 1.5}, H100)


def test_collectives_env_asks_for_the_transport_log_unless_the_user_configured_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    for key in [k for k in os.environ if k.startswith("NCCL_DEBUG")]:
        monkeypatch.delenv(key)
    plugin = CudaPlugin()
    assert plugin.rlport_collectives_env("nccl") == {
        "NCCL_CUMEM_ENABLE": "0",
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_SUBSYS": "INIT,NET",
        "NCCL_DEBUG_FILE": f"{tmp_path}/rlport-nccl.%h.%p.log",
    }
    monkeypatch.setenv("NCCL_DEBUG", "WARN")
    assert plugin.rlport_collectives_env("nccl") == {"NCCL_CUMEM_ENABLE": "0"}
    assert plugin.rlport_collectives_env("gloo") is None


def test_the_preflight_reports_version_and_transport_from_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A one-rank gloo group stands in for NCCL (none here); the log is what NCCL writes at INFO."""
    import socket

    import torch.distributed as dist

    monkeypatch.setenv("RLPORT_SUMMARY", "0")
    monkeypatch.setenv("RLPORT_PLUGINS", "")  # built-ins only: the runtime under the preflight is cpu's
    monkeypatch.delenv("RLPORT_DEVICE", raising=False)
    monkeypatch.setenv("NCCL_DEBUG_FILE", str(tmp_path / "nccl.%h.%p.log"))
    (tmp_path / f"nccl.{socket.gethostname()}.{os.getpid()}.log").write_text(
        "host:1:1 [0] NCCL INFO Using network IB\n"
        "host:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC\n"
        "host:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/IPC\n"
        "host:1:1 [0] NCCL INFO Channel 00/0 : 1[1] -> 2[0] [send] via NET/IB/0\n"
    )
    monkeypatch.setattr(CudaPlugin, "collectives_version", lambda self: "2.21.5")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    bootstrap.reset()
    try:
        (result,) = CudaPlugin().rlport_collectives_preflight("nccl", None)
    finally:
        dist.destroy_process_group()
        bootstrap.reset()
    assert result.ok and result.name == "nccl transport"
    assert result.detail == "NCCL 2.21.5; via P2P/IPC, NET/IB/0; network IB"
    assert CudaPlugin().rlport_collectives_preflight("gloo", None) is None


def test_weight_transport_is_device_ipc_only_for_an_engine_in_other_processes_on_the_device() -> None:
    from rlport.rollout.transport import DeviceIpcTransport
    from rlport.types import EnginePlacement

    plugin = CudaPlugin()
    other = plugin.rlport_weight_transport(
        "vllm", H100, EnginePlacement(same_process=False, same_device=True)
    )
    assert isinstance(other, DeviceIpcTransport) and other.device_type == "cuda" and other.name == "cuda-ipc"
    # the reference serves an engine in this process (no copy) and one on another device (files)
    assert (
        plugin.rlport_weight_transport("hf", H100, EnginePlacement(same_process=True, same_device=True))
        is None
    )
    assert (
        plugin.rlport_weight_transport("vllm", H100, EnginePlacement(same_process=False, same_device=False))
        is None
    )
