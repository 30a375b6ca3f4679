"""The built-in CPU device plugin: always available, lowest priority.

It owns the host as the "accelerator": gloo collectives, host memory (sleep spills to a file), and
torch's scaled-dot-product attention. Its capability claims are what the conformance suite holds
it to.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from rlport.hookspecs import hookimpl
from rlport.types import (
    AttentionBackend,
    AttentionSpec,
    Capabilities,
    DeviceInfo,
    Manifest,
    MemoryBackend,
    ProbeResult,
    StackRequirement,
)

#: vLLM's variable for the cores its CPU worker leaves out of its OpenMP threads.
VLLM_RESERVED_CPUS = "VLLM_CPU_NUM_OF_RESERVED_CPU"


class CpuPlugin:
    rlport_manifest = Manifest(
        name="cpu",
        kind="device",
        hook_api=">=1.0,<2",
        description="Reference device plugin for the host CPU",
    )

    @hookimpl
    def rlport_probe(self) -> ProbeResult:
        return ProbeResult(available=True, reason="the host CPU is always available", priority=0)

    @hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        import torch

        return DeviceInfo(
            device_type="cpu",
            count=1,
            names=(platform.processor() or platform.machine(),),
            device_module=None,
            visible_devices_env=None,
            ray_resource=None,
            collectives_backend="gloo",
            runtime_version=torch.__version__,
            extra={"threads": str(torch.get_num_threads()), "cores": str(os.cpu_count())},
        )

    @hookimpl
    def rlport_supported_stack(self) -> list[StackRequirement]:
        return [
            StackRequirement("torch", ">=2.4", "scaled_dot_product_attention with enable_gqa"),
            StackRequirement("transformers", ">=4.56", "AttentionInterface and AttentionMaskInterface"),
        ]

    @hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        if spec.device_type != "cpu":
            return None
        from rlport.attention.sdpa import backend_for

        return backend_for(spec)

    @hookimpl
    def rlport_memory_backend(self) -> MemoryBackend:
        from rlport.memory import HostMemory

        return HostMemory()

    @hookimpl
    def rlport_engine_args(self, engine: str, args: dict[str, Any]) -> dict[str, Any] | None:
        if engine != "vllm":
            return None
        updates: dict[str, Any] = {}
        if "enforce_eager" not in args:
            # compiling the model graph costs ~50 s of start-up on a CPU and buys little for rollout
            updates["enforce_eager"] = True
        # vLLM's CPU worker keeps one core per rank out of its OpenMP threads by default; training
        # and rollout alternate, so rollout may use every core (see the README's rollout figures).
        # An option or an exported variable of the same name wins.
        updates["env"] = {VLLM_RESERVED_CPUS: "0", **(args.get("env") or {})}
        return updates

    @hookimpl
    def rlport_capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float32", "bfloat16", "float16"),
            head_dims=(32, 40, 64, 72, 80, 96, 128, 160, 192, 256),
            causal=True,
            varlen=True,
            gqa=True,
            sliding_window=True,
            deterministic=True,
            sleep_tags=("weights", "kv_cache"),
            collectives=("all_reduce", "all_gather", "reduce_scatter", "broadcast"),
            reduce_ops=("sum", "product", "min", "max", "avg"),
            rollout_engines=("hf",),
        )


plugin = CpuPlugin()
