"""The case plan: which cases a plugin must pass, computed from its declared capabilities alone.

The plan is a pure function of the declared capabilities (as the JSON dict a report carries), so it
is computed before anything runs, and ``verify`` recomputes it from a report: a must-pass case that
was deselected or never reached shows up as MISSING, and one that skipped itself as FAIL: never a pass.

Every case is must-pass. ``claimed`` says whether the plugin claims the capability the case tests:
for a claimed capability NOT_SUPPORTED is a failure; for an unclaimed one the case is a probe whose
allowed answers are NOT_SUPPORTED (a typed refusal) or COMPATIBILITY_WARNING (works but unclaimed),
while a wrong result is still a FAIL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Attention dtypes the suite knows; the ones a plugin does not claim are probed.
DTYPES = ("float32", "bfloat16", "float16")
#: Head dims probed when not claimed (odd ones included: kernels often assume multiples of 8; the
#: non-power-of-two ones between 128 and 256 that real models use, where tiled kernels switch tiles).
PROBE_HEAD_DIMS = (59, 64, 111, 128, 160, 192, 256)
#: Head dims real models use: inside a claimed range (``HeadDimRange``) these are tested beside its ends.
MODEL_HEAD_DIMS = (32, 40, 48, 64, 72, 80, 96, 112, 128, 160, 192, 224, 256)
#: Key lengths of the single-query decode cases: 1 up to thousands, on both sides of powers of two
#: (where split-KV kernels change their split count), sampled rather than every value.
DECODE_KEY_LENGTHS = (1, 2, 127, 128, 129, 255, 256, 257, 1024, 1025, 2047, 2048, 2049, 4096, 4097)
#: Chunked prefill (1 < q_len < k_len): (q_len, k_len), causal, and with the sliding window.
CHUNKED_SHAPES = ((2, 77), (13, 77), (64, 300))
#: An explicit softmax scale, far from 1/sqrt(head_dim) for every head dim the suite uses.
EXPLICIT_SCALE = 0.3
#: The mask cases: boolean masks differing per batch row (one row fully masked), additive float
#: masks alone and with causality, and each kind with an explicit scale.
MASK_KINDS = ("bool-rows", "float", "float-causal", "bool-scale", "float-scale")
#: Collective operations every device plugin must provide (RL training needs all four).
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
#: Elements per rank; unaligned counts included.
COLLECTIVE_COUNTS = (1, 7, 1023, 65537)
#: World sizes of the collectives cases when the run is on the host CPU (gloo runs them all here).
CPU_WORLD_SIZES = (2, 3, 4)
SLIDING_WINDOW = 16
#: all_reduce operations beyond SUM (the ``collectives.all_reduce`` cases), lower-case ``ReduceOp``
#: names; sum, product, min and max are required, avg is claimed through ``Capabilities.reduce_ops``.
REDUCE_OPS = ("product", "min", "max", "avg")
REQUIRED_REDUCE_OPS = ("sum", "product", "min", "max")
REDUCE_COUNTS = (7, 1023)
#: Large collectives: 64 MiB per tensor (past DDP's 25 MiB buckets twice, and the chunk sizes
#: collective libraries switch at), plus one element so no chunking divides it evenly; every reduce
#: op in every dtype at that size.
LARGE_BYTES = 64 * 1024 * 1024
BUCKET_BYTES = 25 * 1024 * 1024
ITEMSIZE = {"float32": 4, "int32": 4, "bfloat16": 2, "float16": 2}
#: The rollout filters at non-default values: (label, temperature, top_k, top_p).
SAMPLING_FILTERS = (
    ("t0.7", 0.7, 0, 1.0),
    ("k5", 1.0, 5, 1.0),
    ("p0.8", 1.0, 0, 0.8),
    ("t0.7-k5-p0.8", 0.7, 5, 0.8),
)
#: Sampling checked as distributions: (filters, temperature); the top_k and top_p values are chosen
#: at run time from the model so that their boundaries fall on likely tokens.
DISTRIBUTIONS = (("temperature", 0.7), ("top_k", 1.5), ("top_p", 1.5), ("combined", 1.5))
#: Model families built locally for the patched-model equivalence cases.
PATCH_MODELS = ("qwen2", "llama")


@dataclass(frozen=True)
class PlannedCase:
    """One case of the plan. ``kind`` names the test (``attention.forward``), ``params`` the
    parametrisation (``bfloat16-d128-causal-gqa``); the id is ``kind[params]``."""

    kind: str
    params: str = ""
    claimed: bool = True
    must_pass: bool = True
    facets: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        return f"{self.kind}[{self.params}]" if self.params else self.kind

    @property
    def group(self) -> str:
        return self.kind.split(".", 1)[0]

    @property
    def facet(self) -> dict[str, Any]:
        return dict(self.facets)


@dataclass(frozen=True)
class Profile:
    """What a run certifies: ``single-device`` (one rank; a machine with one accelerator cannot run
    multi-rank collectives) or ``multi-device`` at the given world sizes. Cases a profile cannot run
    are not in its plan, and the report, the verdict and ``verify`` name the profile."""

    world_sizes: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        if not self.world_sizes or any(int(n) < 1 for n in self.world_sizes):
            raise ValueError(f"world sizes must be positive integers, got {self.world_sizes!r}")

    @property
    def name(self) -> str:
        if self.world_sizes == (1,):
            return "single-device"
        return f"multi-device ({', '.join(map(str, self.world_sizes))} ranks)"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "world_sizes": list(self.world_sizes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Profile:
        return cls(tuple(int(n) for n in (data or {}).get("world_sizes", (2,))))


def profile_for(device_type: str, device_count: int, world_size: int | None = None) -> Profile:
    """The profile of a run: ``world_size`` when the user chose one (``--world-size``), else every
    visible device (one device: ``single-device``), and on the host CPU 2, 3 and 4 ranks."""
    if world_size is not None:
        return Profile((int(world_size),))
    if device_type == "cpu":
        return Profile(CPU_WORLD_SIZES)
    return Profile((max(1, int(device_count)),))


def _case(kind: str, params: str = "", *, claimed: bool = True, **facets: Any) -> PlannedCase:
    return PlannedCase(kind, params, claimed=claimed, facets=tuple(sorted(facets.items())))


def _platform() -> list[PlannedCase]:
    return [
        _case("platform.probe"),
        _case("platform.probe_isolated"),
        _case("platform.visible_devices"),
        _case("platform.device_info"),
        _case("platform.environment"),
        _case("platform.capabilities"),
        _case("platform.tensor"),
        _case("platform.supported_stack"),
        _case("platform.doctor"),
        *(_case("platform.allocator_settings", phase, phase=phase) for phase in ("rollout", "training")),
    ]


def _layout(name: str) -> tuple[int, int]:
    """(query heads, kv heads) of a head layout."""
    return {"mha": (4, 4), "gqa": (4, 2), "mqa": (4, 1)}[name]


def head_dim_entries(caps: Mapping[str, Any]) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The declared head dims as (listed ints, ranges as ``(low, high, multiple)``), from the JSON
    form of the capabilities (a ``HeadDimRange`` becomes ``{"low", "high", "multiple"}``)."""
    dims: list[int] = []
    ranges: list[tuple[int, int, int]] = []
    for entry in caps.get("head_dims", ()):
        if isinstance(entry, Mapping):
            ranges.append((int(entry["low"]), int(entry["high"]), int(entry.get("multiple", 1))))
        else:
            dims.append(int(entry))
    return dims, ranges


def claims_head_dim(caps: Mapping[str, Any], dim: int) -> bool:
    dims, ranges = head_dim_entries(caps)
    return dim in dims or any(lo <= dim <= hi and dim % m == 0 for lo, hi, m in ranges)


def claimed_head_dims(caps: Mapping[str, Any]) -> list[int]:
    """The head dims the suite tests as claimed: every listed one, and for each range its ends and
    the head dims of real models inside it (:data:`MODEL_HEAD_DIMS`), sorted."""
    dims, ranges = head_dim_entries(caps)
    out = set(dims)
    for lo, hi, m in ranges:
        first, last = -(-lo // m) * m, hi // m * m
        out |= {first, last} | {d for d in MODEL_HEAD_DIMS if first <= d <= last and d % m == 0}
    return sorted(out)


def _attention(caps: Mapping[str, Any]) -> list[PlannedCase]:
    dtypes = [d for d in caps.get("dtypes", ()) if d in DTYPES]
    head_dims = claimed_head_dims(caps)
    causal_ok = bool(caps.get("causal", True))
    cases: list[PlannedCase] = []
    first_dtype = dtypes[0] if dtypes else "float32"
    first_dim = next((d for d in head_dims if d in (64, 128)), head_dims[0] if head_dims else 64)

    def forward(dtype: str, dim: int, causal: bool, layout: str, claimed: bool) -> None:
        heads, kv = _layout(layout)
        params = f"{dtype}-d{dim}-{'causal' if causal else 'full'}-{layout}"
        cases.append(
            _case(
                "attention.forward",
                params,
                claimed=claimed,
                dtype=dtype,
                head_dim=dim,
                causal=causal,
                heads=heads,
                kv_heads=kv,
                layout=layout,
            )
        )

    # Claimed: every dtype x head dim (listed, or sampled over a claimed range), causal and full.
    for dtype in dtypes:
        for dim in head_dims:
            forward(dtype, dim, True, "mha", causal_ok)
            forward(dtype, dim, False, "mha", True)
    # Probes: unclaimed dtypes and head dims (one head dim / one dtype).
    for dtype in DTYPES:
        if dtype not in dtypes:
            forward(dtype, first_dim, False, "mha", False)
    for dim in PROBE_HEAD_DIMS:
        if not claims_head_dim(caps, dim):
            forward(first_dtype, dim, False, "mha", False)
    # Grouped- and multi-query attention.
    gqa = bool(caps.get("gqa", False))
    for dtype in dtypes if gqa else [first_dtype]:
        for layout in ("gqa", "mqa"):
            forward(dtype, first_dim, causal_ok, layout, gqa)
    # Every parameter of forward at non-default values: an explicit scale, masks (part of the
    # contract of every backend, so always claimed).
    for dtype in dtypes or [first_dtype]:
        for causal in (True, False):
            cases.append(
                _case(
                    "attention.scale",
                    f"{dtype}-d{first_dim}-{'causal' if causal else 'full'}-s{EXPLICIT_SCALE:g}",
                    claimed=causal_ok or not causal,
                    dtype=dtype,
                    head_dim=first_dim,
                    causal=causal,
                    scale=EXPLICIT_SCALE,
                )
            )
        for kind in MASK_KINDS:
            cases.append(
                _case(
                    "attention.mask",
                    f"{dtype}-d{first_dim}-{kind}",
                    claimed=causal_ok or kind != "float-causal",
                    dtype=dtype,
                    head_dim=first_dim,
                    mask=kind,
                    causal=kind == "float-causal",
                    scale=EXPLICIT_SCALE if kind.endswith("-scale") else None,
                )
            )
    # Decode (one query, bottom-right aligned) over key lengths from 1 to thousands.
    for dtype in dtypes if causal_ok else [first_dtype]:
        for lk in DECODE_KEY_LENGTHS:
            cases.append(
                _case(
                    "attention.decode",
                    f"{dtype}-d{first_dim}-q1-k{lk}",
                    claimed=causal_ok,
                    dtype=dtype,
                    head_dim=first_dim,
                    q_len=1,
                    k_len=lk,
                )
            )
    # Chunked prefill (1 < q_len < k_len), causal and with the sliding window.
    window = bool(caps.get("sliding_window", False))
    for dtype in dtypes if causal_ok else [first_dtype]:
        for lq, lk in CHUNKED_SHAPES:
            for w in (None, SLIDING_WINDOW):
                cases.append(
                    _case(
                        "attention.chunked_prefill",
                        f"{dtype}-d{first_dim}-q{lq}-k{lk}-" + ("causal" if w is None else f"w{w}"),
                        claimed=causal_ok and (w is None or window),
                        dtype=dtype,
                        head_dim=first_dim,
                        q_len=lq,
                        k_len=lk,
                        window=w,
                    )
                )
    # Packed variable-length input: query lengths equal to key lengths, and different from them.
    varlen = bool(caps.get("varlen", False))
    for kind in ("attention.varlen", "attention.varlen_qk"):
        for dtype in dtypes if varlen else [first_dtype]:
            for causal in (True, False):
                cases.append(
                    _case(
                        kind,
                        f"{dtype}-d{first_dim}-{'causal' if causal else 'full'}-mha",
                        claimed=varlen,
                        dtype=dtype,
                        head_dim=first_dim,
                        causal=causal,
                        layout="mha",
                        separate_k=kind == "attention.varlen_qk",
                    )
                )
    cases.append(
        _case(
            "attention.varlen",
            f"{first_dtype}-d{first_dim}-causal-gqa",
            claimed=varlen and gqa,
            dtype=first_dtype,
            head_dim=first_dim,
            causal=True,
            layout="gqa",
            separate_k=False,
        )
    )
    # Sliding window.
    for dtype in dtypes if window else [first_dtype]:
        cases.append(
            _case(
                "attention.window",
                f"{dtype}-d{first_dim}-w{SLIDING_WINDOW}",
                claimed=window,
                dtype=dtype,
                head_dim=first_dim,
                window=SLIDING_WINDOW,
            )
        )
    # Determinism (bitwise over repeated calls).
    deterministic = bool(caps.get("deterministic", False))
    for dtype in dtypes if deterministic else [first_dtype]:
        cases.append(
            _case(
                "attention.determinism",
                f"{dtype}-d{first_dim}",
                claimed=deterministic,
                dtype=dtype,
                head_dim=first_dim,
            )
        )
    # A configuration no backend can serve must raise UnsupportedAttention.
    cases.append(_case("attention.unsupported", "heads-not-divisible"))
    cases += _generated(caps, dtypes or [first_dtype])
    # The transformers integration (attn_implementation="rlport") on a tiny Qwen2.
    for dtype in dtypes:
        cases.append(_case("attention.transformers", f"qwen2-{dtype}", dtype=dtype))
    return cases


def _generated(caps: Mapping[str, Any], dtypes: list[str]) -> list[PlannedCase]:
    """Generated inputs (``rlport_conformance.generated``): per claimed dtype, every forward regime
    and every gradient regime the claims allow, each a fixed number of Hypothesis examples."""
    from rlport_conformance.generated import FORWARD_REGIMES, GRADIENT_REGIMES

    dims, ranges = head_dim_entries(caps)
    claims = {
        "causal": bool(caps.get("causal", True)),
        "gqa": bool(caps.get("gqa", False)),
        "window": bool(caps.get("sliding_window", False)),
        "head_dims": tuple(dims) if dims or ranges else (64,),
        "head_dim_ranges": tuple(ranges),
    }
    needs = {
        "varlen": bool(caps.get("varlen", False)),
        "gqa": claims["gqa"],
        "window": claims["window"],
        "chunked": claims["causal"],
        "decode": claims["causal"],
    }
    cases = []
    for kind, regimes in (("attention.generated", FORWARD_REGIMES), ("attention.gradient", GRADIENT_REGIMES)):
        for dtype in dtypes:
            for regime, examples in regimes.items():
                if needs.get(regime, True):
                    cases.append(
                        _case(
                            kind, f"{dtype}-{regime}", dtype=dtype, regime=regime, examples=examples, **claims
                        )
                    )
    return cases


def _collectives(caps: Mapping[str, Any], profile: Profile) -> list[PlannedCase]:
    claimed = caps.get("dtypes", ())
    dtypes = ["float32", "int32"] + [d for d in ("bfloat16", "float16") if d in claimed]
    reduce_ops = set(caps.get("reduce_ops", REQUIRED_REDUCE_OPS)) | set(REQUIRED_REDUCE_OPS)
    cases = []
    for world in profile.world_sizes:
        cases += [
            _case("collectives.backend", f"r{world}", world=world),
            _case("collectives.preflight", f"r{world}", world=world),
        ]
        for op in COLLECTIVES:
            for dtype in dtypes:
                for count in COLLECTIVE_COUNTS:
                    roots = range(world) if op == "broadcast" else [None]
                    for root in roots:
                        params = f"{dtype}-n{count}-r{world}" + (f"-root{root}" if root is not None else "")
                        cases.append(
                            _case(
                                f"collectives.{op}",
                                params,
                                op=op,
                                dtype=dtype,
                                count=count,
                                root=root,
                                world=world,
                                reduce_op="sum" if op in ("all_reduce", "reduce_scatter") else None,
                            )
                        )
        cases += _large_collectives(dtypes, reduce_ops, world)
        # Every reduce operation, with inputs whose exact result is known.
        for reduce_op in REDUCE_OPS:
            # avg of integers is not an integer reduction every backend defines: floating dtypes only.
            for dtype in [d for d in dtypes if reduce_op != "avg" or d != "int32"]:
                for count in REDUCE_COUNTS:
                    cases.append(
                        _case(
                            "collectives.all_reduce_op",
                            f"{reduce_op}-{dtype}-n{count}-r{world}",
                            claimed=reduce_op in reduce_ops,
                            op="all_reduce",
                            dtype=dtype,
                            count=count,
                            root=None,
                            world=world,
                            reduce_op=reduce_op,
                        )
                    )
    return cases


def _large_collectives(dtypes: list[str], reduce_ops: set[str], world: int) -> list[PlannedCase]:
    """all_reduce of 64 MiB + 1 element with every reduce op in every dtype (avg: the floating ones);
    all_gather, reduce_scatter and broadcast (from the last rank) of 64 MiB of float32 in all."""

    def case(
        kind: str, op: str, dtype: str, count: int, reduce_op: str | None, root: int | None = None
    ) -> PlannedCase:
        prefix = f"{reduce_op}-" if kind == "collectives.all_reduce_op" else ""
        return _case(
            kind,
            f"{prefix}{dtype}-n{count}-r{world}" + (f"-root{root}" if root is not None else ""),
            claimed=reduce_op is None or reduce_op in reduce_ops or reduce_op == "sum",
            op=op,
            dtype=dtype,
            count=count,
            root=root,
            world=world,
            reduce_op=reduce_op,
            large=True,
        )

    large = LARGE_BYTES // 4 + 1
    cases = [
        case("collectives.all_reduce", "all_reduce", d, LARGE_BYTES // ITEMSIZE[d] + 1, "sum") for d in dtypes
    ]
    cases.append(case("collectives.all_gather", "all_gather", "float32", large // world + 1, None))
    cases.append(case("collectives.reduce_scatter", "reduce_scatter", "float32", large // world + 1, "sum"))
    cases.append(case("collectives.broadcast", "broadcast", "float32", large, None, world - 1))
    for reduce_op in REDUCE_OPS:
        for d in dtypes:
            if reduce_op != "avg" or d != "int32":
                cases.append(
                    case(
                        "collectives.all_reduce_op",
                        "all_reduce",
                        d,
                        LARGE_BYTES // ITEMSIZE[d] + 1,
                        reduce_op,
                    )
                )
    return cases


#: Bytes of the one large tensor of ``memory.large_tensor`` (more than any plausible staging buffer,
#: and not a power of two, so a chunked copy has a remainder); the case uses at most a quarter of the
#: free memory.
LARGE_TENSOR_BYTES = 320 * 1024 * 1024
#: ``memory.many_tensors``: this many tensors of one size, each with its own bytes.
MANY_TENSORS = 256
MANY_TENSOR_BYTES = 64 * 1024


def _memory(caps: Mapping[str, Any]) -> list[PlannedCase]:
    cases = [_case("memory.mem_info"), _case("memory.os_figures"), _case("memory.empty_cache")]
    tags = list(caps.get("sleep_tags", ()))
    for tag in tags:
        cases.append(_case("memory.sleep_frees", tag, tag=tag))
        cases.append(_case("memory.wake_restores", tag, tag=tag))
    if tags:
        cases.append(_case("memory.untagged_untouched", tag=tags[0]))
        cases.append(_case("memory.cycles", tags[0], tag=tags[0]))
        cases.append(_case("memory.large_tensor", tags[0], tag=tags[0], nbytes=LARGE_TENSOR_BYTES))
        cases.append(
            _case(
                "memory.many_tensors",
                tags[0],
                tag=tags[0],
                count=MANY_TENSORS,
                nbytes=MANY_TENSOR_BYTES,
            )
        )
        for dtype in [d for d in caps.get("dtypes", ()) if d in DTYPES]:
            cases.append(_case("memory.dtype_roundtrip", f"{tags[0]}-{dtype}", tag=tags[0], dtype=dtype))
    return cases


def _rollout(caps: Mapping[str, Any]) -> list[PlannedCase]:
    cases = []
    sleeps = bool(caps.get("sleep_tags"))
    for engine in caps.get("rollout_engines", ()):
        cases.append(_case("rollout.greedy_agreement", engine, engine=engine))
        cases.append(_case("rollout.update_weights", engine, engine=engine))
        cases.append(_case("rollout.sleep_wake", engine, claimed=sleeps, engine=engine))
        cases.append(_case("rollout.independent_samples", engine, engine=engine))
        cases.append(_case("rollout.stop_tokens", engine, engine=engine))
        for filters, temperature in DISTRIBUTIONS:
            cases.append(
                _case(
                    "rollout.distribution",
                    f"{engine}-{filters}",
                    engine=engine,
                    filters=filters,
                    temperature=temperature,
                )
            )
        for label, temperature, top_k, top_p in SAMPLING_FILTERS:
            cases.append(
                _case(
                    "rollout.sampling",
                    f"{engine}-{label}",
                    engine=engine,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                )
            )
    return cases


def _patches() -> list[PlannedCase]:
    return [
        _case("patches.roundtrip"),
        _case("patches.targets"),
        *(_case("patches.model_equivalence", family, family=family) for family in PATCH_MODELS),
    ]


#: ``actor.strategy`` values the training hooks are called with.
STRATEGIES = ("replicated", "ddp", "fsdp", "megatron")
#: Strategies the optimizer case runs under: plain tensors (replicated, ddp) and FSDP2's DTensor
#: shards (fsdp); megatron's parameters are plain tensors, as the first two test.
OPTIMIZER_STRATEGIES = ("replicated", "ddp", "fsdp")


def sharded_world(profile: Profile) -> int | None:
    """The rank count the sharded optimizer case runs at: the profile's smallest multi-rank world size
    (2 on the host CPU), None for ``single-device`` (one rank holds every shard: the fsdp case)."""
    multi = [int(n) for n in profile.world_sizes if int(n) > 1]
    return min(multi) if multi else None


def _training(caps: Mapping[str, Any], profile: Profile) -> list[PlannedCase]:
    """rlport_optimizer per strategy (plain parameters; FSDP2 DTensors under fsdp), in float32, in
    bfloat16 when claimed and mixed, and under fsdp again across the ranks of a multi-device profile
    (each rank holding a shard); rlport_unsupported_strategies; rlport_before_model_build per strategy."""
    dtype_sets = [("float32",)]
    if "bfloat16" in caps.get("dtypes", ()):
        dtype_sets += [("bfloat16",), ("float32", "bfloat16")]
    world = sharded_world(profile)
    cases = []
    for strategy in OPTIMIZER_STRATEGIES:
        for dtypes in dtype_sets:
            label = dtypes[0] if len(dtypes) == 1 else "mixed"
            cases.append(
                _case("training.optimizer", f"adamw-{strategy}-{label}", strategy=strategy, dtypes=dtypes)
            )
    if world is not None:  # float32 and mixed: mixed holds a bfloat16 shard beside a float32 one
        for dtypes in [d for d in dtype_sets if len(d) > 1 or d == ("float32",)]:
            label = dtypes[0] if len(dtypes) == 1 else "mixed"
            cases.append(
                _case(
                    "training.optimizer",
                    f"adamw-fsdp-{label}-r{world}",
                    strategy="fsdp",
                    dtypes=dtypes,
                    world=world,
                )
            )
    cases.append(_case("training.unsupported_strategies"))
    cases += [_case("training.before_model_build", s, strategy=s) for s in STRATEGIES]
    return cases


def _weights(caps: Mapping[str, Any]) -> list[PlannedCase]:
    """rlport_weight_transport per claimed engine (the reference ``hf`` when none is claimed), to an
    engine in this process and to one in worker processes."""
    cases = []
    for engine in caps.get("rollout_engines") or ("hf",):
        for same_process, where in ((True, "same-process"), (False, "worker")):
            cases.append(
                _case("weights.transport", f"{engine}-{where}", engine=engine, same_process=same_process)
            )
    return cases


def plan(declared: Mapping[str, Any], profile: Profile | None = None) -> list[PlannedCase]:
    """Every case the suite runs for a plugin that declares ``declared`` (the JSON form of
    :class:`rlport.types.Capabilities`) under ``profile`` (default: 2 ranks), in run order. Pure:
    same input, same plan."""
    profile = profile or Profile()
    return [
        *_platform(),
        *_attention(declared),
        *_collectives(declared, profile),
        *_memory(declared),
        *_rollout(declared),
        *_patches(),
        *_training(declared, profile),
        *_weights(declared),
    ]


def by_id(cases: list[PlannedCase]) -> dict[str, PlannedCase]:
    return {case.id: case for case in cases}


def capabilities_to_dict(caps: Any) -> dict[str, Any]:
    """The JSON form of a :class:`rlport.types.Capabilities` (tuples become lists; anything else
    that is not plain JSON becomes its ``repr``)."""
    from dataclasses import asdict, is_dataclass

    raw = asdict(caps) if is_dataclass(caps) else dict(caps)
    return _jsonable(raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
