"""Short runs of `rlport train --demo` for tests: the tiny sizes, a quiet console, the metrics."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

#: two-second steps on the demo model: 4 prompts x 4 samples of 4 tokens
TINY = ["trainer.progress=false", "data.train_batch_size=4", "rollout.n=4", "rollout.max_new_tokens=4"]


def demo_config(out: Path, *extra: str) -> Any:
    from rlport.train.cli import build_config

    return build_config([*TINY, f"trainer.output_dir={out}", *extra], demo=True)


def run_demo(out: Path, *extra: str, console: Console | None = None) -> Any:
    """The demo with ``extra`` overrides, written to ``out``; its TrainResult."""
    from rlport.train.driver.trainer import Trainer

    return Trainer(demo_config(out, *extra), console=console or Console(file=io.StringIO(), width=200)).fit()


def metrics(res: Any) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl."""
    return [json.loads(line) for line in Path(res.metrics_path).read_text().splitlines()]


def benchmark(name: str) -> Any:
    """``benchmarks/NAME.py`` as a module: tests run the same code a benchmark reports with."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def train_process(args: list[str], folder: Path) -> tuple[str, Path]:
    """``python -m rlport.train ARGS`` as its own process in ``folder`` (wandb offline, no progress
    bar), writing to ``folder/run``; asserts it exited 0 and returns its output and that folder."""
    import os
    import subprocess
    import sys

    out = folder / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "RAY_AUTH_MODE": "disabled", "RLPORT_SUMMARY": "0"}
    cmd = [
        sys.executable,
        "-m",
        "rlport.train",
        *args,
        f"trainer.default_local_dir={out}",
        "trainer.progress=false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=folder)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log, out


def spawn_ranks(
    fn: Any, args: tuple[Any, ...], nprocs: int = 2, *, hang_after: float = 0.0, hang: str = ""
) -> None:
    """``torch.multiprocessing.spawn(fn, args, nprocs)``, once more if a rank was aborted
    (SIGABRT) by the C++ runtime: in the whole suite, about one two-rank gloo run in ten lost a rank
    to "terminate called without an active exception", which no rerun alone reproduced. Any other
    failure, or a second abort, fails the test. A file store in ``args`` (a path ending in
    ``store``) is removed before the rerun, so the ranks rendezvous afresh. With ``hang_after``
    (seconds), ranks still running then are killed and the test fails with ``hang``."""
    import os
    import time
    import warnings

    import pytest
    import torch.multiprocessing as mp

    for attempt in (1, 2):
        try:
            ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
            deadline = time.monotonic() + (hang_after or float("inf"))
            while not ctx.join(timeout=5):
                if time.monotonic() > deadline:
                    for p in ctx.processes:
                        p.kill()
                    pytest.fail(hang or f"the {nprocs} ranks still ran after {hang_after:.0f} s")
            return
        except mp.ProcessExitedException as exc:
            if exc.signal_name != "SIGABRT" or attempt == 2:
                raise
            warnings.warn(f"a rank was aborted ({exc}); running the ranks once more", stacklevel=2)
            for a in args:
                if isinstance(a, str) and a.endswith("store") and os.path.exists(a):
                    os.remove(a)
