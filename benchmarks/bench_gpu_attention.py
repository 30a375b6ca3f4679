"""Attention through the active GPU plugin against the best installed kernel called directly.

Run: ``python benchmarks/bench_gpu_attention.py`` (``--quick`` for a shorter run).

On a GPU (``torch.cuda.is_available()``) the backend is resolved once through
``rlport.current().attention_backend(spec)`` as a model does, and timed against the kernel it wraps
called directly with the same arguments (``flash_attn_func`` on ``(B, L, H, D)`` views when a flash-attn
backend was chosen, else torch SDPA under the same kernels), on a prefill and a decode shape; the table
gives both times, their ratio (goal: >= 0.98) and the plugin path's TFLOP/s (4·B·H·Lq·Lk·D flops,
halved for causal prefill).

Without a GPU it measures what can be measured on the host: the Python cost of the flash-attn
translation (:class:`rlport.attention.flash.FlashAttnBackend`) over calling the interface directly, with
an interface that returns its input (no kernel), so the figure is the per-call overhead alone.
Each figure is the median of ``torch.utils.benchmark.Timer.blocked_autorange``, the two sides
interleaved round by round.
"""

from __future__ import annotations

import argparse
import os
import types
from collections.abc import Callable

os.environ.setdefault("RLPORT_SUMMARY", "0")

import torch
from rich.table import Table
from torch.utils.benchmark import Timer

from rlport.console import make_console

SHAPES = {  # name: (batch, heads, kv_heads, q_len, k_len, head_dim, causal)
    "prefill": (4, 32, 8, 2048, 2048, 128, True),
    "decode": (64, 32, 8, 1, 2048, 128, True),
}


def median_us(fn: Callable[[], object], min_run_time: float, sync: Callable[[], None]) -> float:
    def run() -> None:
        fn()
        sync()

    return Timer(stmt="run()", globals={"run": run}).blocked_autorange(min_run_time=min_run_time).median * 1e6


def paired(a: Callable[[], object], b: Callable[[], object], rounds: int, t: float, sync: Callable[[], None]):
    best_a = best_b = float("inf")
    for _ in range(rounds):
        best_a = min(best_a, median_us(a, t, sync))
        best_b = min(best_b, median_us(b, t, sync))
    return best_a, best_b


def on_gpu(rounds: int, t: float) -> Table:
    import rlport
    from rlport.attention.flash import FlashAttnBackend
    from rlport.types import AttentionSpec

    rt = rlport.init()
    table = Table(title=f"attention on {torch.cuda.get_device_name(0)} via plugin {rt.device_plugin!r}")
    for col in ("shape", "backend", "plugin µs", "direct µs", "direct/plugin", "plugin TFLOP/s"):
        table.add_column(col)
    for name, (b, h, hkv, lq, lk, d, causal) in SHAPES.items():
        dtype = torch.bfloat16
        q = torch.randn(b, h, lq, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype)
        v = torch.randn_like(k)
        spec = AttentionSpec("bfloat16", d, h, hkv, causal=causal, device_type="cuda")
        backend = rt.attention_backend(spec)
        if isinstance(backend, FlashAttnBackend):
            qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            func = backend._func

            def direct(func=func, qt=qt, kt=kt, vt=vt, d=d, causal=causal) -> object:
                return func(qt, kt, vt, softmax_scale=d**-0.5, causal=causal)
        else:
            from torch.nn.attention import sdpa_kernel

            kernels = getattr(backend, "_backends", None)

            def direct(q=q, k=k, v=v, causal=causal, kernels=kernels) -> object:
                with sdpa_kernel(kernels):
                    return torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, is_causal=causal and q.shape[2] == k.shape[2], enable_gqa=True
                    )

        def plugin(backend=backend, q=q, k=k, v=v, causal=causal) -> object:
            return backend.forward(q, k, v, causal=causal)

        ours, theirs = paired(plugin, direct, rounds, t, torch.cuda.synchronize)
        flops = 4 * b * h * lq * lk * d * (0.5 if causal and lq == lk else 1.0)
        table.add_row(
            name,
            backend.name,
            f"{ours:.1f}",
            f"{theirs:.1f}",
            f"{theirs / ours:.3f}",
            f"{flops / ours / 1e6:.1f}",
        )
    return table


def on_host(rounds: int, t: float) -> Table:
    from rlport.attention.flash import FlashAttnBackend
    from rlport.attention.sdpa import SdpaBackend

    def passthrough(q, k, v, **kwargs):  # the interface's shape contract, no kernel
        return q

    interface = types.SimpleNamespace(flash_attn_func=passthrough, flash_attn_varlen_func=passthrough)
    backend = FlashAttnBackend(interface, name="no-kernel", fallback=SdpaBackend())
    table = Table(
        title="flash-attn translation overhead on the host (no GPU: the interface returns its input)"
    )
    for col in ("shape", "through FlashAttnBackend µs", "interface direct µs", "overhead µs/call"):
        table.add_column(col)
    for name, (b, h, hkv, lq, lk, d, causal) in SHAPES.items():
        q = torch.randn(b, h, min(lq, 16), d).bfloat16()
        k = torch.randn(b, hkv, min(lk, 16), d).bfloat16()
        qt, kt = q.transpose(1, 2), k.transpose(1, 2)

        def ours(q=q, k=k, causal=causal) -> object:
            return backend.forward(q, k, k, causal=causal)

        def theirs(qt=qt, kt=kt, d=d, causal=causal) -> object:
            return passthrough(qt, kt, kt, softmax_scale=d**-0.5, causal=causal, window_size=(-1, -1))

        a, b_ = paired(ours, theirs, rounds, t, lambda: None)
        table.add_row(name, f"{a:.2f}", f"{b_:.2f}", f"{a - b_:.2f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    rounds, t = (2, 0.2) if args.quick else (5, 1.0)
    table = on_gpu(rounds, t) if torch.cuda.is_available() else on_host(rounds, t)
    make_console().print(table)


if __name__ == "__main__":
    main()
