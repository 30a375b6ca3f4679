"""rlport device plugin for Huawei Ascend NPUs (torch_npu, CANN, hccl, vllm-ascend).

The entry-point object :data:`plugin` is cheap to load: this module imports neither torch nor
torch_npu. The probe decides from the file system (:mod:`rlport_ascend.probe`); torch_npu is imported
only once the plugin is active, by the hooks that need it.

Tested against fakes of ``torch_npu`` and ``torch.npu`` only; it has not run on Ascend hardware.
"""

from __future__ import annotations

from typing import Any

from rlport.hookspecs import hookimpl
from rlport.types import (
    AllocatorSettings,
    AttentionBackend,
    AttentionSpec,
    Capabilities,
    DeviceInfo,
    Finding,
    Manifest,
    PatchSpec,
    ProbeResult,
    StackRequirement,
)

__version__ = "0.1.0"


class AscendPlugin:
    rlport_manifest = Manifest(
        name="ascend",
        kind="device",
        hook_api=">=1.0,<2",
        description="Huawei Ascend NPUs through torch_npu (CANN), hccl and vllm-ascend",
    )

    @hookimpl
    def rlport_probe(self) -> ProbeResult:
        from rlport_ascend.probe import block_torch_npu, detect

        detection = detect()
        block_torch_npu(detection)  # torch_npu installed without CANN: keep transformers from importing it
        return detection.result()

    @hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        from rlport_ascend.device import device_info

        return device_info()

    @hookimpl
    def rlport_supported_stack(self) -> list[StackRequirement]:
        from rlport_ascend.stack import requirements

        return requirements()

    @hookimpl
    def rlport_doctor(self, device: DeviceInfo) -> list[Finding]:
        from rlport_ascend.checks import findings

        return findings(device)

    @hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        if spec.device_type != "npu":
            return None
        import torch_npu

        from rlport_ascend.attention import backend_for

        return backend_for(spec, torch_npu.npu_fusion_attention)

    @hookimpl
    def rlport_allocator_settings(self, phase: str) -> AllocatorSettings:
        from rlport_ascend.allocator import settings

        return settings(phase)

    @hookimpl
    def rlport_engine_args(
        self, engine: str, args: dict[str, Any], device: DeviceInfo
    ) -> dict[str, Any] | None:
        from rlport_ascend.engine import engine_args

        return engine_args(engine, args, device)

    @hookimpl
    def rlport_patches(self) -> list[PatchSpec]:
        from rlport_ascend.patches import transformers_patches

        return transformers_patches()

    @hookimpl
    def rlport_optimizer(self, name: str, device: DeviceInfo, strategy: str) -> Any | None:
        from rlport_ascend.training import optimizer

        return optimizer(name, strategy)

    @hookimpl
    def rlport_before_model_build(self, strategy: str, device: DeviceInfo) -> None:
        from rlport_ascend.training import before_model_build

        before_model_build(strategy)

    @hookimpl
    def rlport_unsupported_strategies(self, device: DeviceInfo) -> dict[str, str]:
        return {}  # megatron through MindSpeed's adaptor (rlport_before_model_build)

    @hookimpl
    def rlport_capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("bfloat16", "float16"),
            head_dims=(64, 128),
            causal=True,
            varlen=True,
            gqa=True,
            sliding_window=True,
            sleep_tags=("weights", "kv_cache"),
            collectives=("all_reduce", "all_gather", "reduce_scatter", "broadcast"),
            rollout_engines=("hf", "vllm"),
            extra={"tested_on": "fakes of torch_npu only; never run on an Ascend NPU"},
        )


plugin = AscendPlugin()
