"""Typed values that cross the boundary between the core and a plugin.

Everything a hook takes or returns is one of these (or a builtin). They are plain frozen
dataclasses with no torch import, so ``import rlport`` stays light; fields that hold torch
objects are typed as ``Any``/strings and documented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

PluginKind = Literal["device", "fabric"]
Phase = Literal["rollout", "training"]


@dataclass(frozen=True)
class Manifest:
    """What a plugin object declares about itself, as its ``rlport_manifest`` attribute.

    ``hook_api`` is a packaging specifier set over :data:`rlport.HOOK_API_VERSION`
    (for example ``">=1.0,<2"``). ``kind`` is ``"device"`` (owns the accelerator, exactly one
    active) or ``"fabric"`` (tunes the interconnect, zero or more active).

    ``tunes_backends`` (fabric plugins only) names the ``torch.distributed`` backends the plugin
    tunes, for example ``("nccl",)``; once the active device plugin's backend is known, a fabric
    plugin that does not list it is left out (shown as unavailable, with the reason). Empty: any.
    """

    name: str
    kind: PluginKind
    hook_api: str
    description: str = ""
    tunes_backends: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One problem ``rlport doctor`` reports: which ``check`` found it, the ``problem`` in words that
    name the value, and the ``fix`` (a command where one exists)."""

    check: str
    problem: str
    fix: str


@dataclass(frozen=True)
class ProbeResult:
    """A plugin's answer to "can you run on this machine?".

    ``reason`` says why in words a user can act on ("no driver: mychip-smi not found on PATH").
    Among available device plugins the highest ``priority`` wins; the built-in CPU plugin
    answers ``priority=0``. Vendor plugins use 100 and up.

    ``env`` holds variables this process and its workers need *before torch is imported*, whether
    or not the plugin is available (for example a switch that keeps a vendor torch extension which
    cannot load here from breaking ``import torch``). The core exports them right after probing,
    unless the user exported the variable already (the user's value wins).

    ``findings`` are problems of this machine the plugin sees even when it is unavailable (a vendor
    package installed without its driver). ``rlport doctor`` reports each, with its fix.
    """

    available: bool
    reason: str
    priority: int = 100
    env: dict[str, str] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class DeviceInfo:
    """The accelerator the active device plugin owns.

    ``device_type`` is torch's device type string (``"cpu"``, ``"cuda"``, ...);
    ``device_module`` the dotted name of torch's per-device module (``"torch.cuda"``), or
    ``None`` for the host; ``visible_devices_env`` the variable that restricts which devices a
    process sees; ``ray_resource`` the Ray resource name workers request (``None``: CPUs only).

    ``peak_flops`` is one device's dense peak in FLOP/s per compute dtype name (``"bfloat16"``,
    ``"float16"``, ``"float32"``, ``"tfloat32"`` for float32 matmuls run as TF32), from the vendor's
    published figures for the device model; empty where the plugin does not know the model (then
    training reports no MFU rather than a guess).

    Per-device defaults the plugin decides: ``offload_by_default`` makes training park the actor's
    whole weights in host memory while its engine generates (``actor.offload`` unset; a device
    whose memory the actor and the engine share gains from it, the host does not);
    ``hub_kernels`` asks transformers to swap layers for Hugging Face Hub kernels (off unless
    asked; :mod:`rlport.devices.hub_kernels`).
    """

    device_type: str
    count: int
    names: tuple[str, ...] = ()
    device_module: str | None = None
    visible_devices_env: str | None = None
    ray_resource: str | None = None
    collectives_backend: str = "gloo"
    driver_version: str | None = None
    runtime_version: str | None = None
    conflicting_env: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)
    peak_flops: dict[str, float] = field(default_factory=dict)
    offload_by_default: bool = False
    hub_kernels: bool = False


@dataclass(frozen=True)
class StackRequirement:
    """One distribution the plugin needs, with the versions it is known to work with."""

    distribution: str
    specifier: str
    why: str = ""
    optional: bool = False


@dataclass(frozen=True)
class AttentionSpec:
    """What an attention call looks like, used to pick a backend once.

    ``dtype`` is the torch dtype's short name (``"float32"``, ``"bfloat16"``, ``"float16"``).
    ``varlen`` means packed variable-length input given by cumulative sequence lengths.
    ``window`` is a sliding-window size in tokens, or ``None`` for full attention.
    """

    dtype: str
    head_dim: int
    num_heads: int
    num_kv_heads: int
    causal: bool = True
    varlen: bool = False
    window: int | None = None
    device_type: str = "cpu"
    dropout: bool = False

    @property
    def gqa(self) -> bool:
        return self.num_kv_heads != self.num_heads


@runtime_checkable
class AttentionBackend(Protocol):
    """A resolved attention implementation; the caller keeps it and calls it directly.

    ``forward`` takes ``q`` of shape ``(batch, heads, q_len, head_dim)``, ``k``/``v`` of shape
    ``(batch, kv_heads, k_len, head_dim)``, an optional boolean or additive ``mask`` broadcastable
    to ``(batch, heads, q_len, k_len)``, and returns ``(batch, heads, q_len, head_dim)``.
    ``forward_varlen`` takes packed ``q`` ``(total_q, heads, head_dim)``, ``k``/``v``
    ``(total_k, kv_heads, head_dim)`` with int32 ``cu_seqlens_q``/``cu_seqlens_k`` and returns
    ``(total_q, heads, head_dim)``; no token attends across a sequence boundary.
    """

    name: str

    def forward(
        self, q: Any, k: Any, v: Any, *, causal: bool, scale: float | None = None, mask: Any = None
    ) -> Any: ...

    def forward_varlen(
        self,
        q: Any,
        k: Any,
        v: Any,
        *,
        cu_seqlens_q: Any,
        cu_seqlens_k: Any,
        max_seqlen_q: int,
        max_seqlen_k: int,
        causal: bool,
        scale: float | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class AllocatorSettings:
    """Allocator configuration for one phase: environment variables (set before the first
    allocation) and a free-form note shown in the summary."""

    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class MemoryInfo:
    free_bytes: int
    total_bytes: int


@runtime_checkable
class MemoryBackend(Protocol):
    """Device memory operations of the active platform, resolved once.

    ``park(storage)`` copies a torch ``UntypedStorage``'s bytes somewhere off the device and
    returns a handle; ``unpark(handle, storage)`` copies them back into ``storage`` (already
    resized to its original size) and releases the handle. The core's sleep/wake uses these
    with storage resizing, so tensor identity, views and ``data_ptr`` sharing are preserved.
    """

    name: str

    def mem_info(self) -> MemoryInfo: ...

    def empty_cache(self) -> None: ...

    def park(self, storage: Any) -> Any: ...

    def unpark(self, handle: Any, storage: Any) -> None: ...


@dataclass(frozen=True)
class PreflightResult:
    """One check of a collectives preflight: ``ok`` with a ``detail`` the summary shows."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class EngineOffer:
    """A rollout engine a plugin offers. ``factory`` is a dotted path ``module:attr`` to a
    callable ``factory(config: EngineConfig) -> RolloutEngine``, imported only when chosen.
    ``requires`` lists modules that must be importable for the engine to be usable (checked
    without importing them); ``install_hint`` is the command that installs them."""

    name: str
    factory: str
    description: str = ""
    requires: tuple[str, ...] = ()
    install_hint: str = ""


@dataclass(frozen=True)
class EnginePlacement:
    """Where a rollout engine's weights live as seen from the trainer, to choose a weight transport.

    ``same_process`` means the engine's ``update_weights`` takes the trainer's tensors as they are,
    in the trainer's process (the ``hf`` engine holds its model there; an engine whose own API
    shares tensors with its server processes, as SGLang's does, counts too). Otherwise the model
    lives in engine worker processes, reached through ``receive_weights(unpack, payload)`` (see
    :class:`rlport.rollout.protocol.WorkerWeightsEngine`). ``same_device`` means the engine's model
    is on the trainer's device.
    """

    same_process: bool
    same_device: bool = True


@runtime_checkable
class WeightTransport(Protocol):
    """How the trainer's weights reach a rollout engine, resolved once and kept by the trainer.

    ``send(engine, named_tensors)`` moves ``(Hugging Face name, tensor)`` pairs into ``engine`` in
    buckets of at most ``bucket_bytes`` (a group of tensors one engine module loads together, such
    as the q/k/v projections of one attention block, is never split, so a bucket may exceed the
    bound by at most one such group); the engine serves the new weights from its next call on.
    ``name`` is shown in the startup summary and the metrics.
    """

    name: str
    bucket_bytes: int

    def send(self, engine: Any, named_tensors: Any) -> None: ...


PatchAction = Literal["added", "replaced", "wrapped"]


@dataclass(frozen=True)
class PatchSpec:
    """One change a plugin makes to third-party code, declared as data; the core applies it.

    ``target`` is a dotted path ``package.module:Attr.sub`` (module, then attribute path).
    ``replacement`` is the new object or a lazy dotted path ``module:attr``; for ``wrapped`` it is
    a callable ``wrapper(original) -> replacement``. ``distribution`` owns the target and
    ``versions`` (packaging specifiers) is where the patch is known to be right.
    ``stacks_on`` names a plugin whose patch of the same target this one deliberately wraps.
    ``expected_skip`` says the patch is deliberately limited to releases that may not be the
    installed one (a compatibility patch for an older release): when the installed version is
    outside ``versions`` the patch is skipped as expected, which is neither a problem for
    ``rlport doctor`` nor fatal under ``RLPORT_STRICT=1``. Left ``False``, such a skip is a problem.
    """

    target: str
    replacement: Any
    action: PatchAction
    distribution: str
    versions: str
    reason: str
    upstream: str = ""
    remove_when: str = ""
    stacks_on: str | None = None
    expected_skip: bool = False


@dataclass(frozen=True)
class HeadDimRange:
    """Every head dim from ``low`` to ``high`` (both included) that is a multiple of ``multiple``,
    as one entry of :attr:`Capabilities.head_dims`: ``HeadDimRange(32, 256, 8)`` claims 32, 40, ...,
    256. The conformance suite tests the ends and the head dims real models use inside it."""

    low: int
    high: int
    multiple: int = 1

    def __post_init__(self) -> None:
        if not all(isinstance(x, int) and x >= 1 for x in (self.low, self.high, self.multiple)):
            raise ValueError(
                f"HeadDimRange({self.low!r}, {self.high!r}, {self.multiple!r}): low, high and multiple "
                "must be positive integers, for example HeadDimRange(32, 256, 8)"
            )
        if self.high < self.low or not self.values():
            raise ValueError(
                f"HeadDimRange({self.low}, {self.high}, {self.multiple}) holds no head dim; expected "
                f"low <= high with a multiple of {self.multiple} between them"
            )

    def __contains__(self, dim: object) -> bool:
        return isinstance(dim, int) and self.low <= dim <= self.high and dim % self.multiple == 0

    def values(self) -> range:
        """Every head dim of the range, smallest first."""
        first = -(-self.low // self.multiple) * self.multiple
        return range(first, self.high + 1, self.multiple)


def claims_head_dim(head_dims: tuple[int | HeadDimRange, ...], dim: int) -> bool:
    """Whether ``head_dims`` (a :attr:`Capabilities.head_dims` value) claims ``dim``."""
    return any(dim in entry if isinstance(entry, HeadDimRange) else dim == entry for entry in head_dims)


@dataclass(frozen=True)
class Capabilities:
    """What a plugin claims, for the conformance suite. Every claim is tested as must-pass;
    what is not claimed is probed and reported as a compatibility warning when it works.

    ``head_dims`` lists head dims (ints) and/or ranges of them (:class:`HeadDimRange`), for example
    ``(64, 128)`` or ``(HeadDimRange(32, 256, 8),)``. ``reduce_ops`` are the ``torch.distributed``
    reduce operations the collectives backend implements (lower-case ``ReduceOp`` names); sum,
    product, min and max are required, ``"avg"`` is optional (gloo has none)."""

    dtypes: tuple[str, ...] = ()
    head_dims: tuple[int | HeadDimRange, ...] = ()
    causal: bool = True
    varlen: bool = False
    gqa: bool = False
    sliding_window: bool = False
    deterministic: bool = False
    sleep_tags: tuple[str, ...] = ()
    collectives: tuple[str, ...] = ()
    reduce_ops: tuple[str, ...] = ("sum", "product", "min", "max")
    rollout_engines: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def claims_head_dim(self, dim: int) -> bool:
        """Whether :attr:`head_dims` claims ``dim`` (listed, or inside a listed range)."""
        return claims_head_dim(self.head_dims, dim)
