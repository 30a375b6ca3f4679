"""The plugin active in a real ``rlport.init()``, on a machine the probe is told has NPUs and CANN,
with the fake torch_npu: selection, device info, attention resolution, allocator settings, patches in
the summary (per distribution, module and class), and doctor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from ascend_fakes import fake_npu_fixture  # noqa: F401  (the fixture "fake_npu")

import rlport
from rlport import bootstrap
from rlport.types import AttentionSpec
from rlport_ascend import probe
from rlport_ascend.attention import FusionAttention


@pytest.fixture
def active(fake_npu: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[rlport.Runtime]:
    found = probe.Detection(
        torch_npu=True,
        toolkit=Path("/usr/local/Ascend/ascend-toolkit/latest"),
        library_errors=(),
        devices=(0, 1),
        npu_smi="/usr/local/bin/npu-smi",
    )
    monkeypatch.setattr(probe, "detect", lambda machine=None: found)
    for var in (
        "RLPORT_DEVICE",
        "RLPORT_PLUGINS",
        "RLPORT_STRICT",
        "EXPANDABLE_SEGMENTS",
        "PYTORCH_NPU_ALLOC_CONF",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLPORT_SUMMARY", "0")
    bootstrap.reset()
    try:
        yield rlport.init()
    finally:
        bootstrap.reset()


def test_ascend_is_selected_and_describes_the_npu(active: rlport.Runtime) -> None:
    assert active.device_plugin == "ascend"
    assert active.device.device_type == "npu" and active.device.count == 2
    assert active.collectives_backend == "hccl"
    assert active.torch_device(local_rank=3) == "npu:1"


def test_attention_resolves_to_fusion_attention_for_npu_specs(active: rlport.Runtime) -> None:
    spec = AttentionSpec(dtype="bfloat16", head_dim=64, num_heads=8, num_kv_heads=2, device_type="npu")
    backend = active.attention_backend(spec)
    assert isinstance(backend, FusionAttention)
    assert active.attention_backend(spec) is backend  # resolved once
    packed_window = AttentionSpec(
        dtype="bfloat16", head_dim=64, num_heads=8, num_kv_heads=2, device_type="npu", varlen=True, window=32
    )
    assert active.attention_backend(packed_window).name == "sdpa"  # deferred to the reference


def test_allocator_and_patches_through_the_runtime(active: rlport.Runtime, monkeypatch) -> None:
    from rlport.patches import get_manager

    settings = active.allocator_settings("training")
    assert settings is not None
    records = [r for r in get_manager().records if r.plugin == "ascend"]
    assert {r.target for r in records} >= {
        "transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm.forward",
        "transformers.models.qwen3_moe.modeling_qwen3_moe:apply_rotary_pos_emb",
    }
    import transformers.models.qwen2.modeling_qwen2 as qwen2

    assert qwen2.Qwen2RMSNorm.forward.__qualname__.startswith("rms_norm.")  # applied on import
    rendered = " ".join(str(part) for part in get_manager().to_json())
    assert "Qwen2RMSNorm" in rendered
