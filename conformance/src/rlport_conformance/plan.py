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
#: Head dims probed when not claimed (odd ones included: kernels often assume multiples of 8).
PROBE_HEAD_DIMS = (59, 64, 111, 128)
#: Collective operations every device plugin must provide (RL training needs all four).
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
#: Elements per rank; unaligned counts included.
COLLECTIVE_COUNTS = (1, 7, 1023, 65537)
#: World sizes of the collectives cases when the run is on the host CPU (gloo runs them all here).
CPU_WORLD_SIZES = (2, 3, 4)
#: Sequence lengths of the decode-shaped (q_len != k_len) cases: (q_len, k_len).
DECODE_SHAPES = ((1, 77), (13, 77))
SLIDING_WINDOW = 16


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
        _case("platform.device_info"),
        _case("platform.environment"),
        _case("platform.capabilities"),
        _case("platform.tensor"),
    ]


def _layout(name: str) -> tuple[int, int]:
    """(query heads, kv heads) of a head layout."""
    return {"mha": (4, 4), "gqa": (4, 2), "mqa": (4, 1)}[name]


def _attention(caps: Mapping[str, Any]) -> list[PlannedCase]:
    dtypes = [d for d in caps.get("dtypes", ()) if d in DTYPES]
    head_dims = [int(d) for d in caps.get("head_dims", ())]
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

    # Claimed: every dtype x head dim, causal and full, plain multi-head.
    for dtype in dtypes:
        for dim in head_dims:
            forward(dtype, dim, True, "mha", causal_ok)
            forward(dtype, dim, False, "mha", True)
    # Probes: unclaimed dtypes and head dims (causal, one head dim / one dtype).
    for dtype in DTYPES:
        if dtype not in dtypes:
            forward(dtype, first_dim, False, "mha", False)
    for dim in PROBE_HEAD_DIMS:
        if dim not in head_dims:
            forward(first_dtype, dim, False, "mha", False)
    # Grouped- and multi-query attention.
    gqa = bool(caps.get("gqa", False))
    for dtype in dtypes if gqa else [first_dtype]:
        for layout in ("gqa", "mqa"):
            forward(dtype, first_dim, causal_ok, layout, gqa)
    # Causal with q_len != k_len (decode shapes), bottom-right aligned.
    for dtype in dtypes if causal_ok else [first_dtype]:
        for lq, lk in DECODE_SHAPES:
            cases.append(
                _case(
                    "attention.decode",
                    f"{dtype}-d{first_dim}-q{lq}-k{lk}",
                    claimed=causal_ok,
                    dtype=dtype,
                    head_dim=first_dim,
                    q_len=lq,
                    k_len=lk,
                )
            )
    # Packed variable-length input.
    varlen = bool(caps.get("varlen", False))
    for dtype in dtypes if varlen else [first_dtype]:
        for causal in (True, False):
            cases.append(
                _case(
                    "attention.varlen",
                    f"{dtype}-d{first_dim}-{'causal' if causal else 'full'}-mha",
                    claimed=varlen,
                    dtype=dtype,
                    head_dim=first_dim,
                    causal=causal,
                    layout="mha",
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
        )
    )
    # Sliding window.
    window = bool(caps.get("sliding_window", False))
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
    # The transformers integration (attn_implementation="rlport") on a tiny Qwen2.
    for dtype in dtypes:
        cases.append(_case("attention.transformers", f"qwen2-{dtype}", dtype=dtype))
    return cases


def _collectives(caps: Mapping[str, Any], profile: Profile) -> list[PlannedCase]:
    dtypes = ["float32", "int32"] + (["bfloat16"] if "bfloat16" in caps.get("dtypes", ()) else [])
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
                            )
                        )
    return cases


def _memory(caps: Mapping[str, Any]) -> list[PlannedCase]:
    cases = [_case("memory.mem_info"), _case("memory.empty_cache")]
    tags = list(caps.get("sleep_tags", ()))
    for tag in tags:
        cases.append(_case("memory.sleep_frees", tag, tag=tag))
        cases.append(_case("memory.wake_restores", tag, tag=tag))
    if tags:
        cases.append(_case("memory.untagged_untouched", tag=tags[0]))
    return cases


def _rollout(caps: Mapping[str, Any]) -> list[PlannedCase]:
    cases = []
    sleeps = bool(caps.get("sleep_tags"))
    for engine in caps.get("rollout_engines", ()):
        cases.append(_case("rollout.greedy_agreement", engine, engine=engine))
        cases.append(_case("rollout.update_weights", engine, engine=engine))
        cases.append(_case("rollout.sleep_wake", engine, claimed=sleeps, engine=engine))
        cases.append(_case("rollout.independent_samples", engine, engine=engine))
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
        _case("patches.roundtrip"),
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
