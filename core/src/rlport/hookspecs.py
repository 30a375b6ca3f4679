"""The hooks a plugin may implement.

A plugin is an object (usually a module or a class instance) named by an entry point in the
``rlport.plugins`` group. It carries an ``rlport_manifest`` attribute (:class:`rlport.types.Manifest`)
and implements any of the hooks below, each decorated with :data:`rlport.hookimpl`. A plugin
implements only what differs on its hardware: the core registers reference implementations that
answer last, so every hook has an answer.

Only active plugins (the one selected device plugin, and every available fabric plugin that tunes
its collectives backend, see ``Manifest.tunes_backends``) take part in hook calls. Hooks are called to *resolve* an implementation, never per operation: the caller keeps
what a hook returns and calls it directly.

Conventions, as in pytest: "first answer wins" marks a ``firstresult`` hook, where the first
non-``None`` return stops the call and a plugin returns ``None`` to defer. Otherwise every active
plugin's answer is collected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rlport.types import (
        AllocatorSettings,
        AttentionBackend,
        AttentionSpec,
        Capabilities,
        DeviceInfo,
        EngineOffer,
        EnginePlacement,
        Finding,
        MemoryBackend,
        PatchSpec,
        PreflightResult,
        ProbeResult,
        StackRequirement,
        WeightTransport,
    )

PROJECT = "rlport"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------------
# Platform
# -------------------------------------------------------------------------------------------------


@hookspec
def rlport_probe() -> ProbeResult:
    """Say whether this plugin can run on this machine.

    Called once per process on every allowed plugin (device and fabric), before selection and before
    the plugin is active, directly on that plugin (never broadcast). Must be cheap and must not
    import torch or the vendor's torch extension: a driver file, a shared library, an environment
    variable or a package's metadata tells. A fabric plugin without a probe is always available.

    :return: a :class:`~rlport.types.ProbeResult`. "Not available" is a normal answer and says why;
        its ``env`` is exported before torch is imported, and its ``findings`` are reported by
        ``rlport doctor`` whether or not the plugin is available. Raising marks the plugin *broken*
        and is reported with the error.
    """


@hookspec(firstresult=True)
def rlport_device_info() -> DeviceInfo | None:
    """Describe the accelerator of the active device plugin.

    Called once, at :func:`rlport.init`, after selection. This is where a device plugin may import
    its heavy modules.

    :return: a :class:`~rlport.types.DeviceInfo`. First answer wins.
    """


@hookspec
def rlport_worker_env(device: DeviceInfo) -> dict[str, str] | None:
    """Environment variables worker processes (Ray actors, torchrun ranks, engine workers) need.

    Called once at :func:`rlport.init` on every active plugin. All answers are merged; two plugins
    setting one variable to different values is an error naming both.

    :return: a mapping of variable to value, or ``None``.
    """


@hookspec
def rlport_supported_stack() -> list[StackRequirement] | None:
    """The versions of the software stack this plugin is known to work with.

    Called by ``rlport doctor`` and the summary on every active plugin; all answers are collected and
    each requirement is checked against the installed distributions.

    :return: a list of :class:`~rlport.types.StackRequirement`, or ``None``.
    """


@hookspec
def rlport_doctor(device: DeviceInfo) -> list[Finding] | None:
    """Problems of this machine's set-up that only this plugin knows how to see.

    Called by ``rlport doctor`` on every active plugin, after the core's own checks (stack versions,
    visible-device variables, plugin environment, patches). Use it for a vendor rule: variables that
    contradict each other, a library that shadows the one the stack was built for, a setting that
    breaks a later phase. Never raise for a problem: return it.

    :return: a list of :class:`~rlport.types.Finding` (empty or ``None`` when all is well). All
        answers are collected; any finding makes ``rlport doctor`` exit 1.
    """


# -------------------------------------------------------------------------------------------------
# Attention
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlport_attention_backend(spec: AttentionSpec) -> AttentionBackend | None:
    """Return an attention backend for calls shaped like ``spec``, or ``None`` to defer.

    Called once per distinct spec (the core caches the answer); the caller keeps the backend and
    calls it per layer. A plugin whose kernel lacks a head size, dtype or feature returns ``None``
    and the next plugin, or the core's reference (``torch`` scaled-dot-product attention), answers.
    The conformance suite credits none of the reference's answers to the plugin: a claimed spec left
    to it fails; to serve the reference as your own, return ``rlport.attention.sdpa.backend_for(spec)``.

    :return: an object satisfying :class:`~rlport.types.AttentionBackend`. First answer wins.
    """


# -------------------------------------------------------------------------------------------------
# Collectives
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlport_collectives_backend(device: DeviceInfo) -> str | None:
    """Name the ``torch.distributed`` backend to use (``"gloo"``, ``"nccl"``, ...).

    Called once at process-group initialisation.

    :return: a backend name, or ``None`` to use ``device.collectives_backend``. First answer wins.
    """


@hookspec
def rlport_collectives_env(backend: str) -> dict[str, str] | None:
    """Environment variables the interconnect needs before the process group starts.

    Called once per process before ``init_process_group`` on every active plugin (this is the main
    hook of a fabric plugin). Answers are merged; conflicting values are an error naming both.

    :return: a mapping of variable to value, or ``None``.
    """


@hookspec
def rlport_collectives_preflight(backend: str, group: Any) -> list[PreflightResult] | None:
    """Prove the process group works, and that the intended transport is really in use.

    Called once after the process group is initialised, on every active plugin, collectively on all
    ranks (a check that communicates must run on every rank). The core's reference runs an
    ``all_reduce`` whose exact result is known.

    :return: a list of :class:`~rlport.types.PreflightResult`, or ``None``. All answers collected;
        any failed check stops the run with its fix.
    """


# -------------------------------------------------------------------------------------------------
# Memory
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlport_allocator_settings(phase: str) -> AllocatorSettings | None:
    """Allocator configuration for a phase (``"rollout"`` or ``"training"``).

    Called once per phase at start-up; the settings' environment is applied before the first
    allocation of that phase's process (``Runtime.apply_allocator_settings``). A process that runs
    both phases (``rlport train``'s workers co-locate actor and engine) applies ``"training"``, whose
    allocation comes first; a process that only rolls out applies ``"rollout"``.

    :return: :class:`~rlport.types.AllocatorSettings`, or ``None`` for the device's defaults.
        First answer wins.
    """


@hookspec(firstresult=True)
def rlport_memory_backend(device: DeviceInfo) -> MemoryBackend | None:
    """Return the memory operations of the active device: free/total, empty cache, park/unpark.

    Called once at :func:`rlport.init`. Sleep and wake by tag (``rlport.memory.TaggedMemory``) are
    built on this backend in the core.

    :return: an object satisfying :class:`~rlport.types.MemoryBackend`. First answer wins; the
        reference parks storage in host memory.
    """


# -------------------------------------------------------------------------------------------------
# Rollout engines
# -------------------------------------------------------------------------------------------------


@hookspec
def rlport_rollout_engines() -> list[EngineOffer] | None:
    """The rollout engines this plugin offers.

    Called once when engines are listed or one is chosen by name. All answers are collected; two
    offers of one name are an error naming both plugins.

    :return: a list of :class:`~rlport.types.EngineOffer`, or ``None``.
    """


@hookspec
def rlport_engine_args(engine: str, args: dict[str, Any], device: DeviceInfo) -> dict[str, Any] | None:
    """Adjust an engine's construction arguments for this device.

    Called once per engine construction on every active plugin, device plugin first. Each answer
    is a mapping of updates applied in call order (so a fabric plugin sees the device plugin's
    changes in ``args``). Use it for what a device cannot do (a sleep level) or needs (a dtype),
    not to re-implement the engine.

    :return: a mapping of argument updates, or ``None``.
    """


@hookspec(firstresult=True)
def rlport_weight_transport(
    engine: str, device: DeviceInfo, placement: EnginePlacement
) -> WeightTransport | None:
    """Choose how the trainer's weights reach rollout engine ``engine`` after each update.

    Called once per trainer process and engine (the trainer keeps the transport and calls its
    ``send`` every step), with the engine's :class:`~rlport.types.EnginePlacement`: whether its
    ``update_weights`` takes this process's tensors directly, and whether its model is on the
    trainer's device. A device plugin answers where it has something faster than the reference,
    for example device IPC handles for an engine in another process on the same device
    (:class:`rlport.rollout.transport.DeviceIpcTransport`), and returns ``None`` otherwise.

    :return: an object satisfying :class:`~rlport.types.WeightTransport`. First answer wins; the
        reference hands tensors over in memory, in size-bounded buckets, to an engine in the same
        process, and writes one safetensors file per bucket for an engine in another process.
    """


# -------------------------------------------------------------------------------------------------
# Patches
# -------------------------------------------------------------------------------------------------


@hookspec
def rlport_patches() -> list[PatchSpec] | None:
    """Declare the patches this plugin needs applied to third-party code.

    Called once per process at :func:`rlport.init`, on each active plugin separately so every patch
    is attributed to its plugin. The core applies them all-or-nothing per plugin, checks versions
    and ownership, verifies and reports them. Never patch anything yourself at import.

    :return: a list of :class:`~rlport.types.PatchSpec`, or ``None``.
    """


# -------------------------------------------------------------------------------------------------
# Conformance
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlport_capabilities() -> Capabilities | None:
    """What the active device plugin claims to support, for the conformance suite.

    Called by ``rlport conformance`` and ``rlport plugins``. Every claim is tested as must-pass;
    unclaimed features are probed and reported as compatibility warnings when they work. Head dims
    may be listed or given as ranges (:class:`~rlport.types.HeadDimRange`).

    :return: :class:`~rlport.types.Capabilities`. First answer wins.
    """


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def rlport_optimizer(name: str, device: DeviceInfo, strategy: str) -> Any | None:
    """The implementation of optimizer ``name`` (``"adamw"``) for the actor on this device.

    Called once per training process, after the strategy (``"replicated"``, ``"ddp"``, ``"fsdp"``)
    has wrapped the model; the actor keeps the factory. A device plugin answers where it has a
    faster optimizer (a fused kernel of its own) and returns ``None`` for names it does not know.

    :return: a callable ``factory(params, *, lr, betas, weight_decay) -> torch.optim.Optimizer``.
        First answer wins; the reference builds ``torch.optim.AdamW`` with ``fused=True`` where
        torch has a fused kernel for the accelerator, else (and on the host) ``foreach=True``.
    """


@hookspec
def rlport_before_model_build(strategy: str, device: DeviceInfo) -> None:
    """Prepare the process before the actor's model is built for ``strategy``.

    Called once per training process, on every active plugin, device plugin first, before the
    model is loaded and wrapped: the place for imports that must come before a training library's
    own (an adaptor that patches Megatron for the device). Raise an
    :class:`~rlport.errors.RlportError` naming the fix when the preparation fails.

    :return: nothing; a returned value is ignored.
    """


@hookspec(firstresult=True)
def rlport_unsupported_strategies(device: DeviceInfo) -> dict[str, str] | None:
    """The training strategies (``actor.strategy`` values) this device cannot run, with why.

    Called once by the driver, before any model is loaded: a strategy named here stops the run at
    once with the reason and a fix. A device plugin that runs every strategy returns ``{}``.

    :return: a mapping ``{strategy: reason}``. First answer wins; the reference refuses
        ``megatron``, whose model needs device kernels only a device plugin can vouch for.
    """
