"""The demo's final reward for every seed on every CPU kernel path torch offers here.

    python benchmarks/demo_robustness.py                       # seeds 0-9 x every capability
    python benchmarks/demo_robustness.py --seeds 0 1 2 --caps avx2
    python benchmarks/demo_robustness.py -j 2 actor.lr=1e-3    # any rlport train override
    python benchmarks/demo_robustness.py --caps avx512 -- actor.lr=1e-3

Each cell is one whole `rlport train --demo` process, run with ATEN_CPU_CAPABILITY set: torch
then uses that instruction set's kernels (`default` is the portable scalar path). A cell shows the
mean reward of the last 5 steps (what the demo's closing line prints) and the run's wall time. The
capabilities are `default`, `avx2` and whatever torch picks on this machine when the variable is
unset, read from `torch.backends.cpu.get_cpu_capability()`.

Exit status 1 if any cell is below --floor (0.95: the README's promise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: the values ATEN_CPU_CAPABILITY takes on x86 (torch/aten/src/ATen/native/DispatchStub.cpp)
CAPABILITIES = ("default", "avx2", "avx512", "zvector", "vsx", "sve256")


def best_capability() -> str:
    """What torch picks here when ATEN_CPU_CAPABILITY is unset, e.g. ``AVX512``."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().lower()


def run_cell(seed: int, cap: str, overrides: list[str], threads: int | None) -> tuple[float, float]:
    """One demo run; returns (last-5 mean reward, wall seconds)."""
    with tempfile.TemporaryDirectory(prefix="rlport-demo-") as out:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, RLPORT_SUMMARY="0")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        cmd = [
            sys.executable,
            "-m",
            "rlport.train",
            "--demo",
            f"trainer.seed={seed}",
            f"trainer.output_dir={out}",
            "trainer.progress=false",
            *overrides,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"seed {seed} {cap}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        lines = Path(out, "metrics.jsonl").read_text().splitlines()
        rewards = [json.loads(line)["reward/mean"] for line in lines]
        return sum(rewards[-5:]) / len(rewards[-5:]), wall


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=list(range(10)))
    parser.add_argument(
        "--caps", nargs="*", default=None, choices=CAPABILITIES, help="default: default, avx2, the best"
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS per run")
    parser.add_argument("--floor", type=float, default=0.95)
    parser.add_argument("overrides", nargs="*", help="rlport train overrides, key=value")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    best = best_capability()
    caps = args.caps or list(dict.fromkeys(["default", "avx2", best]))
    cells = [(s, c) for s in args.seeds for c in caps]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = pool.map(lambda sc: run_cell(*sc, args.overrides, args.threads), cells)
        results = dict(zip(cells, runs, strict=True))

    table = Table(title=f"rlport train --demo {' '.join(args.overrides)}: last-5 mean reward (wall s)")
    table.add_column("seed", justify="right")
    for cap in caps:
        table.add_column(f"{cap}{' (best here)' if cap == best else ''}", justify="right")
    for seed in args.seeds:
        table.add_row(str(seed), *(f"{results[seed, c][0]:.3f} ({results[seed, c][1]:.1f})" for c in caps))
    console = Console()
    console.print(table)
    rewards = [r for r, _ in results.values()]
    walls = [w for _, w in results.values()]
    low = [cell for cell, (r, _) in results.items() if r < args.floor]
    console.print(
        f"min reward {min(rewards):.3f}, {len(low)} of {len(cells)} below {args.floor}; "
        f"wall s min {min(walls):.1f} median {sorted(walls)[len(walls) // 2]:.1f} max {max(walls):.1f}",
        markup=False,
    )
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
