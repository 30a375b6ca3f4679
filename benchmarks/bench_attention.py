"""Per-call overhead of the resolved attention backend over calling torch directly.

Run: ``python benchmarks/bench_attention.py`` (``--quick`` for a shorter run, ``--threads N`` for more
torch threads than the default 1).

For each shape the backend is resolved once through ``rlport.current().attention_backend(spec)``,
as a model does, and then timed against ``torch.nn.functional.scaled_dot_product_attention`` called
directly with the same arguments; then both again with torch's kernel stubbed out, which leaves only
the Python cost of each path (the overhead, free of kernel-time noise). A last pair times the
transformers attention functions (``"rlport"`` vs transformers' ``"sdpa"``) on the decode shape.
Each figure is the best of several rounds of ``torch.utils.benchmark.Timer.blocked_autorange`` (its
median), the two sides interleaved round by round so drift and other load on the host hit both alike.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("RLPORT_SUMMARY", "0")

import torch
import torch.nn.functional as F
from rich.table import Table
from torch.utils.benchmark import Timer

import rlport
from rlport.console import make_console
from rlport.types import AttentionSpec


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    kv_heads: int
    q_len: int
    k_len: int
    head_dim: int
    causal: bool

    def label(self) -> str:
        return (
            f"{self.name} B={self.batch} H={self.heads}/{self.kv_heads} "
            f"L={self.q_len}/{self.k_len} D={self.head_dim}{' causal' if self.causal else ''}"
        )


SHAPES = [
    Shape("decode", 1, 8, 2, 1, 128, 64, causal=True),
    Shape("prefill", 4, 16, 4, 512, 512, 64, causal=True),
]


def median_us(fn: Callable[[], object], min_run_time: float) -> float:
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def interleaved(fns: list[Callable[[], object]], rounds: int, min_run_time: float) -> list[float]:
    """Each function's best per-round median: the rounds alternate between the functions, and the best
    round is the one least disturbed by other work on the host (as ``timeit`` advises)."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            samples[i].append(median_us(fn, min_run_time))
    return [min(s) for s in samples]


def bench_backend(shape: Shape, rounds: int, min_run_time: float) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(shape.batch, shape.heads, shape.q_len, shape.head_dim, generator=gen)
    k = torch.randn(shape.batch, shape.kv_heads, shape.k_len, shape.head_dim, generator=gen)
    v = torch.randn(shape.batch, shape.kv_heads, shape.k_len, shape.head_dim, generator=gen)
    spec = AttentionSpec(
        dtype="float32",
        head_dim=shape.head_dim,
        num_heads=shape.heads,
        num_kv_heads=shape.kv_heads,
        causal=shape.causal,
    )
    backend = rlport.current().attention_backend(spec)
    gqa = shape.kv_heads != shape.heads
    # The direct call: what a hand-written model would do (is_causal only means bottom-right when Lq == Lk,
    # and a single decode query needs no mask).
    direct_causal = shape.causal and shape.q_len == shape.k_len
    sdpa = F.scaled_dot_product_attention

    def direct() -> torch.Tensor:
        return sdpa(q, k, v, is_causal=direct_causal, enable_gqa=gqa)

    forward = backend.forward
    causal = shape.causal

    def through_backend() -> torch.Tensor:
        return forward(q, k, v, causal=causal)

    torch.testing.assert_close(direct(), through_backend())
    a, b = interleaved([direct, through_backend], rounds, min_run_time)
    return a, b


def bench_python_only(shape: Shape, rounds: int, min_run_time: float) -> tuple[float, float]:
    """The same two calls with torch's kernel replaced by a stub returning ``q``: what is left is the
    Python work of each path (argument checks, branch, dispatch), free of kernel-time noise."""
    import rlport.attention.sdpa as sdpa_module

    q = torch.empty(shape.batch, shape.heads, shape.q_len, shape.head_dim)
    k = torch.empty(shape.batch, shape.kv_heads, shape.k_len, shape.head_dim)
    v = torch.empty_like(k)
    spec = AttentionSpec("float32", shape.head_dim, shape.heads, shape.kv_heads, causal=shape.causal)
    forward = rlport.current().attention_backend(spec).forward
    gqa = shape.kv_heads != shape.heads
    direct_causal = shape.causal and shape.q_len == shape.k_len
    causal = shape.causal

    def stub(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return q

    def direct() -> torch.Tensor:
        return stub(q, k, v, is_causal=direct_causal, enable_gqa=gqa)

    def through_backend() -> torch.Tensor:
        return forward(q, k, v, causal=causal)

    saved = sdpa_module._sdpa
    sdpa_module._sdpa = stub
    try:
        return tuple(interleaved([direct, through_backend], rounds, min_run_time))  # type: ignore[return-value]
    finally:
        sdpa_module._sdpa = saved


def bench_transformers(shape: Shape, rounds: int, min_run_time: float) -> tuple[float, float]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from rlport.attention.transformers_integration import register, rlport_attention_forward

    register()
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(shape.batch, shape.heads, shape.q_len, shape.head_dim, generator=gen)
    k = torch.randn(shape.batch, shape.kv_heads, shape.k_len, shape.head_dim, generator=gen)
    v = torch.randn(shape.batch, shape.kv_heads, shape.k_len, shape.head_dim, generator=gen)
    module = torch.nn.Module()
    module.is_causal = True
    module.num_key_value_groups = shape.heads // shape.kv_heads
    scaling = shape.head_dim**-0.5

    def theirs() -> object:
        return sdpa_attention_forward(module, q, k, v, None, scaling=scaling)

    def ours() -> object:
        return rlport_attention_forward(module, q, k, v, None, scaling=scaling)

    torch.testing.assert_close(theirs()[0], ours()[0])
    a, b = interleaved([theirs, ours], rounds, min_run_time)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steadiest on a busy host; 0 keeps torch's own setting)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, min_run_time = (3, 0.2) if args.quick else (7, 0.4)

    runtime = rlport.current()
    table = Table(
        title=f"attention per-call cost (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device plugin {runtime.device_plugin}, fp32)"
    )
    for column in ("shape", "path", "direct µs", "rlport µs", "ratio", "overhead µs"):
        table.add_column(column, justify="left" if column in ("shape", "path") else "right", no_wrap=True)

    def row(label: str, path: str, direct: float, ours: float) -> None:
        table.add_row(
            label, path, f"{direct:.1f}", f"{ours:.1f}", f"{ours / direct:.3f}", f"{ours - direct:+.1f}"
        )

    for shape in SHAPES:
        direct, ours = bench_backend(shape, rounds, min_run_time)
        row(shape.label(), "backend.forward vs F.sdpa", direct, ours)
    for shape in SHAPES:
        direct, ours = bench_python_only(shape, rounds, min_run_time)
        row(shape.label(), "python only (kernel stubbed)", direct, ours)
    decode = SHAPES[0]
    direct, ours = bench_transformers(decode, rounds, min_run_time)
    row(decode.label(), "transformers fn rlport vs sdpa", direct, ours)
    make_console().print(table)
    print("H=heads/kv_heads, L=q_len/k_len; overhead = rlport - direct (negative: within noise)")


if __name__ == "__main__":
    main()
