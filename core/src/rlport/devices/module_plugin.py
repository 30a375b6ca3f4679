"""The hooks every device plugin on a torch device module answers alike, as a base class.

A plugin subclasses :class:`DeviceModulePlugin`, sets the class attributes (its name, the device
module, the allocator variable, the collectives library's variable prefix) and adds what differs on its
hardware (probe, device info, attention, doctor rules). Everything here is parameterised by those
attributes; the class imports nothing heavy, so the plugin object stays cheap to load.
"""

from __future__ import annotations

import os
from typing import Any

from rlport.devices import allocator, collective_log, engine_args
from rlport.hookspecs import hookimpl
from rlport.settings import exported
from rlport.types import (
    AllocatorSettings,
    Capabilities,
    DeviceInfo,
    EnginePlacement,
    Finding,
    MemoryBackend,
    PreflightResult,
    StackRequirement,
)


class DeviceModulePlugin:
    """Memory, allocator, vLLM arguments and the collectives preflight of a torch device module."""

    #: The plugin's name (findings are reported under it) and the platform's name in messages.
    check: str = ""
    platform: str = ""
    #: The torch device module (``"torch.cuda"``) and the caching allocator's variable.
    device_module: str = ""
    alloc_conf_variable: str = ""
    #: The torch.distributed backend and the variable prefix of its library's debug log.
    collectives_backend: str = ""
    collectives_prefix: str = ""
    #: Variables the collectives library needs in every process that joins a group.
    collectives_env_vars: dict[str, str] = {}  # noqa: RUF012 (read-only class default)
    #: The distributions the plugin is known to work with (rlport_supported_stack).
    stack: tuple[StackRequirement, ...] = ()
    #: What the device's attention kernels serve (claimed in rlport_capabilities).
    attention_dtypes: tuple[str, ...] = ("bfloat16", "float16", "float32")
    attention_head_dims: tuple[int, ...] = (64, 80, 96, 128, 256)
    collectives: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
    #: Whether torch can share this device's memory between processes (``reduce_tensor`` handles):
    #: then an engine in other processes on the same device gets weights without crossing host memory.
    device_ipc: bool = False
    #: An AdamW the device's stack ships, for ``rlport_optimizer``: ``(import target, extension
    #: modules it needs, fixed options)``; used where every one imports, else the reference answers.
    fused_adamw: tuple[str, tuple[str, ...], dict[str, Any]] | None = None
    #: The strategies whose parameters that optimizer takes (plain tensors: FSDP2's DTensors are
    #: left to torch's own AdamW, which handles them).
    fused_adamw_strategies: tuple[str, ...] = ("replicated", "ddp", "megatron")
    #: ``actor.strategy`` values the device cannot run, with why (rlport_unsupported_strategies).
    unsupported_strategies: dict[str, str] = {}  # noqa: RUF012 (read-only class default)

    # -- what a subclass may refine -----------------------------------------------------------------
    def sleep_levels(self, device: DeviceInfo) -> tuple[int, ...]:
        """vLLM's sleep levels on ``device``; empty where the platform has no sleep mode."""
        return (1, 2)

    def collectives_version(self) -> str:
        """The collectives library's version, for the preflight and device info: the device module's
        submodule named like the backend (``torch.cuda.nccl.version()``), where it has one."""
        import importlib

        try:
            library = getattr(importlib.import_module(self.device_module), self.collectives_backend)
            version = library.version()
        except Exception as exc:  # no such submodule, or a torch built without the library
            return f"unknown ({type(exc).__name__})"
        return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)

    # -- hooks ------------------------------------------------------------------------------------------
    @hookimpl
    def rlport_worker_env(self, device: DeviceInfo) -> dict[str, str]:
        """The collectives variables, for every worker (engine workers join weight-sync groups too).
        Visible-device variables are left to the launcher: rlport's Ray workers ask for one device each
        and Ray narrows the visible-devices variable, so no ``RAY_EXPERIMENTAL_NOSET_*`` is set here
        (:func:`rlport.devices.visible.ray_noset_finding` reports one the user set)."""
        return dict(self.collectives_env_vars)

    @hookimpl
    def rlport_supported_stack(self) -> list[StackRequirement]:
        return list(self.stack)

    @hookimpl
    def rlport_memory_backend(self, device: DeviceInfo) -> MemoryBackend:
        from rlport.memory import DeviceModuleMemory

        return DeviceModuleMemory(device)

    @hookimpl
    def rlport_allocator_settings(self, phase: str) -> AllocatorSettings:
        if not self.alloc_conf_variable:  # a device whose allocator takes no settings
            return AllocatorSettings(note=f"{self.platform or self.check}'s allocator takes no settings")
        return allocator.phase_settings(
            phase, self.alloc_conf_variable, sleep_mode=allocator.sleep_engine_installed()
        )

    @hookimpl
    def rlport_engine_args(
        self, engine: str, args: dict[str, Any], device: DeviceInfo
    ) -> dict[str, Any] | None:
        if engine != "vllm":
            return None
        return engine_args.vllm_args(args, sleep_levels=self.sleep_levels(device), platform=self.platform)

    @hookimpl
    def rlport_collectives_env(self, backend: str) -> dict[str, str] | None:
        if backend != self.collectives_backend:
            return None
        return {**self.collectives_env_vars, **collective_log.debug_env(self.collectives_prefix)}

    @hookimpl
    def rlport_collectives_preflight(self, backend: str, group: Any) -> list[PreflightResult] | None:
        if backend != self.collectives_backend:
            return None
        import torch
        import torch.distributed as dist

        import rlport

        # The library builds its communicator, and logs its transport, at the first collective.
        probe = torch.ones(1, device=rlport.current().torch_device())
        dist.all_reduce(probe, group=group)
        ok = probe.item() == dist.get_world_size(group)
        return [
            PreflightResult(
                f"{backend} transport",
                ok,
                f"{self.collectives_prefix} {self.collectives_version()}; "
                + collective_log.describe(self.collectives_prefix),
                fix=""
                if ok
                else f"the {backend} all_reduce of ones returned {probe.item()}: run `rlport doctor`",
            )
        ]

    @hookimpl
    def rlport_weight_transport(self, engine: str, device: DeviceInfo, placement: EnginePlacement) -> Any:
        """Device IPC buckets for an engine in other processes on this device, where the device can
        share memory between processes; otherwise the reference decides (in-process or files)."""
        if not self.device_ipc or placement.same_process or not placement.same_device:
            return None
        from rlport.rollout.transport import DeviceIpcTransport

        return DeviceIpcTransport(device.device_type)

    @hookimpl
    def rlport_optimizer(self, name: str, device: DeviceInfo, strategy: str) -> Any | None:
        """The class's :attr:`fused_adamw` for ``adamw`` on its strategies, where it imports."""
        if name != "adamw" or self.fused_adamw is None or strategy not in self.fused_adamw_strategies:
            return None
        from rlport.optim import imported_optimizer

        target, requires, options = self.fused_adamw
        return imported_optimizer(target, requires=requires, options=options)

    @hookimpl
    def rlport_unsupported_strategies(self, device: DeviceInfo) -> dict[str, str]:
        return dict(self.unsupported_strategies)

    @hookimpl
    def rlport_capabilities(self) -> Capabilities:
        """Claims: the class's dtypes and head dims, causal, packed, grouped-query and sliding-window
        attention (flash-attn or SDPA with the window as a mask), sleep by tag (storage release, which
        works on any torch device), the collectives, and vLLM where it is installed."""
        return Capabilities(
            dtypes=self.attention_dtypes,
            head_dims=self.attention_head_dims,
            causal=True,
            varlen=True,
            gqa=True,
            sliding_window=True,
            sleep_tags=("weights", "kv_cache"),
            collectives=self.collectives,
            rollout_engines=("hf", "vllm") if allocator.sleep_engine_installed() else ("hf",),
        )

    # -- for the subclass's rlport_doctor ---------------------------------------------------------------
    def common_findings(self, env: dict[str, str] | None = None) -> list[Finding]:
        """The findings every plugin of this kind reports: a user-exported allocator configuration that
        breaks vLLM sleep mode (where a sleep-mode engine is installed), and collectives variables the
        user set to other values than the library needs."""
        env = dict(os.environ) if env is None else env
        out: list[Finding] = []
        if allocator.sleep_engine_installed():
            conflict = allocator.sleep_conflict(
                self.alloc_conf_variable, self.check, env=env, exported=exported()
            )
            if conflict is not None:
                out.append(conflict)
        for key, value in self.collectives_env_vars.items():
            if key in env and env[key] != value and key not in exported():
                out.append(
                    Finding(
                        self.check,
                        f"{key}={env[key]!r} is set; {self.collectives_backend} weight sync with vLLM needs {value!r}",
                        f"export {key}={value}",
                    )
                )
        return out
