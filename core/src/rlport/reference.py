"""The core's reference implementations: registered after every plugin and marked ``trylast``, so
they answer only when no active plugin does. Each works on any torch device."""

from __future__ import annotations

from typing import Any

from rlport.extras import install_command
from rlport.hookspecs import hookimpl
from rlport.types import (
    AttentionBackend,
    AttentionSpec,
    DeviceInfo,
    EngineOffer,
    EnginePlacement,
    MemoryBackend,
    PreflightResult,
    WeightTransport,
)

NAME = "reference"


def _extra_engine(name: str, description: str) -> EngineOffer:
    """An adapter over a third-party engine: module ``rlport.rollout.<name>_engine``, needs the
    importable package ``name``, installed with the extra ``rlport[<name>]``."""
    return EngineOffer(
        name=name,
        factory=f"rlport.rollout.{name}_engine:create",
        description=description,
        requires=(name,),
        install_hint=install_command(name),
    )


ENGINES = [
    EngineOffer(
        name="hf",
        factory="rlport.rollout.hf_engine:create",
        description="Hugging Face transformers generate(), attention through the selected backend",
        requires=("transformers",),
        install_hint="pip install transformers",
    ),
    _extra_engine(
        "vllm", "vLLM offline engine (LLM); weight sync and sleep where the platform supports them"
    ),
    _extra_engine("sglang", "SGLang offline engine (Engine); tested against a fake sglang module only"),
]


class Reference:
    """The reference plugin object (one instance, registered as ``reference``)."""

    @hookimpl(trylast=True)
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        from rlport.attention.sdpa import backend_for

        return backend_for(spec)

    @hookimpl(trylast=True)
    def rlport_collectives_backend(self, device: DeviceInfo) -> str:
        return device.collectives_backend

    @hookimpl(trylast=True)
    def rlport_collectives_preflight(self, backend: str, group: Any) -> list[PreflightResult]:
        from rlport.collectives import exact_all_reduce_check

        return [exact_all_reduce_check(group)]

    @hookimpl(trylast=True)
    def rlport_memory_backend(self, device: DeviceInfo) -> MemoryBackend:
        from rlport.memory import DeviceModuleMemory, HostMemory

        return DeviceModuleMemory(device) if device.device_module else HostMemory()

    @hookimpl(trylast=True)
    def rlport_rollout_engines(self) -> list[EngineOffer]:
        return ENGINES

    @hookimpl(trylast=True)
    def rlport_weight_transport(
        self, engine: str, device: DeviceInfo, placement: EnginePlacement
    ) -> WeightTransport:
        from rlport.rollout.transport import FileTransport, InProcessTransport

        return InProcessTransport() if placement.same_process else FileTransport()

    # -- training ------------------------------------------------------------------------------

    @hookimpl(trylast=True)
    def rlport_optimizer(self, name: str, device: DeviceInfo, strategy: str) -> Any | None:
        if name != "adamw":
            return None
        from rlport.optim import AdamWFactory

        return AdamWFactory(device.device_type)

    @hookimpl(trylast=True)
    def rlport_unsupported_strategies(self, device: DeviceInfo) -> dict[str, str]:
        return {
            "megatron": "megatron needs a device with megatron-core's forward kernels (fused "
            f"attention and layer norms on an accelerator), and device type {device.device_type!r} "
            "has none; a device plugin that runs it answers rlport_unsupported_strategies without "
            "'megatron' (`rlport plugins` lists the installed ones)"
        }
