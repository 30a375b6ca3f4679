"""Per-phase time of a GRPO step on the `rlport train --demo` task, and the orchestration overhead.

    python benchmarks/bench_grpo.py                      # the demo, 50 steps, 1 worker
    python benchmarks/bench_grpo.py --steps 20 trainer.workers=2
    python benchmarks/bench_grpo.py rollout.engine=vllm  # any rlport train override

Phases (seconds, mean over the steps after the first, which warms up):
  generate  the engine's generate() call inside the worker (rollout compute)
  rollout   the driver's rollout phase: generate plus dispatch and gathering
  reward    decoding, reward rules, group advantages (driver)
  sleep     engine sleep (and actor wake when offloading)
  logprob   actor (and reference) logprob recompute
  update    forward/backward/optimizer steps (all-reduce included with several workers)
  sync      engine wake and weight update
  step      the whole step as the driver sees it
Overhead share = (step - generate - logprob - update) / step: the part of a step spent outside
rollout and training compute. Also prints the demo's reward, first 5 steps vs last 5 steps.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time

PHASES = ("generate", "rollout", "reward", "sleep", "logprob", "update", "sync", "step")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--output-dir", default=None, help="default: a temporary folder")
    parser.add_argument("overrides", nargs="*", help="rlport train overrides, key=value")
    args = parser.parse_args()
    os.environ.setdefault("RLPORT_SUMMARY", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    from rich.console import Console
    from rich.table import Table

    from rlport.console import make_console
    from rlport.train.cli import build_config
    from rlport.train.driver.trainer import Trainer

    console = make_console()
    out = args.output_dir or tempfile.mkdtemp(prefix="rlport-bench-")
    overrides = [
        "trainer.progress=false",
        f"trainer.steps={args.steps}",
        f"trainer.output_dir={out}",
        *args.overrides,
    ]
    cfg = build_config(overrides, demo=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, console=Console(file=io.StringIO()))
    result = trainer.fit()
    wall = time.perf_counter() - t0
    hist = result.history
    timed = hist[1:] if len(hist) > 1 else hist

    table = Table(
        title=f"GRPO step phases, demo, {cfg.trainer.workers} worker(s), engine {cfg.rollout.engine}, "
        f"steps 2..{len(hist)} (step 1 warms up)"
    )
    table.add_column("phase")
    table.add_column("mean s", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("share of step", justify="right")
    step_mean = statistics.fmean(h["time/step"] for h in timed)
    for phase in PHASES:
        values = [h[f"time/{phase}"] for h in timed]
        table.add_row(
            phase,
            f"{statistics.fmean(values):.4f}",
            f"{statistics.median(values):.4f}",
            f"{statistics.fmean(values) / step_mean:.1%}",
        )
    overhead = [
        max(0.0, h["time/step"] - h["time/generate"] - h["time/logprob"] - h["time/update"]) for h in timed
    ]
    table.add_row(
        "[bold]overhead[/]",
        f"{statistics.fmean(overhead):.4f}",
        f"{statistics.median(overhead):.4f}",
        f"[bold]{sum(overhead) / sum(h['time/step'] for h in timed):.1%}[/]",
    )
    console.print(table)
    k = min(5, len(hist))
    first = statistics.fmean(h["reward/mean"] for h in hist[:k])
    last = statistics.fmean(h["reward/mean"] for h in hist[-k:])
    tok = statistics.fmean(h["perf/rollout_tokens_per_s"] for h in timed)
    console.print(
        f"reward: first {k} steps {first:.3f} -> last {k} steps {last:.3f}; rollout {tok:.0f} tokens/s; "
        f"{len(hist)} steps in {wall:.1f}s including worker start; curve {result.plot_path}"
    )


if __name__ == "__main__":
    main()
