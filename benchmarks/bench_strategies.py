"""Memory and time of the training strategies (``actor.strategy``) with 2 workers, on CPU/gloo.

    python benchmarks/bench_strategies.py                      # ~80M parameters, 3 updates each
    python benchmarks/bench_strategies.py --hidden 512 --layers 6 --steps 2

Builds a Qwen2 model locally (nothing is downloaded), then for each of replicated, ddp and fsdp
spawns two ranks (a gloo process group) that each build the :class:`rlport.train.models.actor.Actor` and
run ``--steps`` GRPO updates on 8 synthetic rollouts per rank. Per strategy it prints:

  state MB   parameters + gradients + AdamW state rank 0 holds (shards under fsdp)
  rss MB     rank 0's resident memory after the updates (/proc/self/statm)
  peak MB    each rank's peak resident memory (getrusage), model loading included (fsdp builds
             the model on the meta device and loads only each rank's shards; rank 0 reads the
             memory-mapped checkpoint to broadcast it, tensor by tensor)
  step s     mean update time after the first update (which warms up)
  sync s     time to hand every full parameter out once (the weight sync's gather, no engine)

and each figure relative to replicated, all measured in one run.

The ranks run with ``MALLOC_MMAP_THRESHOLD_=131072`` (unless ``--glibc-default``): glibc otherwise
raises its mmap threshold as large blocks are freed and then keeps such blocks in its heap, so the
resident memory of a strategy that allocates and frees a layer's gathered parameters and gradients
each step (fsdp) measures the allocator's retention, not what the strategy holds.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ("replicated", "ddp", "fsdp")


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _state_mb(actor: Any) -> float:
    import torch

    def local(t: torch.Tensor) -> int:
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    total = 0
    for p in actor.model.parameters():
        total += local(p)
        if p.grad is not None:
            total += local(p.grad)
    for state in actor.optimizer.state.values():
        total += sum(local(v) for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return total / 2**20


def _rank(rank: int, model: str, strategy: str, steps: int, store: str, out: str) -> None:
    import json

    import torch
    import torch.distributed as dist

    import rlport
    from rlport.train.cli import build_config
    from rlport.train.data.batch import Sample
    from rlport.train.models.actor import Actor

    os.environ["RLPORT_SUMMARY"] = "0"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    cfg = build_config(
        [
            f"model.path={model}",
            f"actor.strategy={strategy}",
            "trainer.workers=2",
            "actor.micro_batch_size=4",
        ],
        demo=False,
    )
    actor = Actor(cfg, path=model, device="cpu", rank=rank, world=2, rt=rlport.init())
    g = torch.Generator().manual_seed(rank)
    samples = [
        Sample.scored(
            torch.randint(3, 100, (16,), generator=g).tolist(),
            torch.randint(3, 100, (16,), generator=g).tolist(),
            [0.0] * 16,
            float(i % 2) - 0.5,
        )
        for i in range(8)
    ]
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        actor.update(samples, actor.logprobs(samples))
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for _name, tensor in actor.full_parameters():
        del tensor
    sync = time.perf_counter() - t
    params_m = sum(p.numel() for _, p in actor.full_parameters()) / 1e6  # every rank gathers
    Path(f"{out}.{rank}").write_text(
        json.dumps(
            {
                "state": _state_mb(actor),
                "rss": _rss_mb(),
                "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "step": sum(times[1:]) / max(1, len(times) - 1) if len(times) > 1 else times[0],
                "sync": sync,
                "params_m": params_m,
            }
        )
    )
    dist.destroy_process_group()


def main() -> None:
    import json

    import torch.multiprocessing as mp
    from rich.console import Console
    from rich.table import Table

    from rlport.rollout.tiny import build_tiny_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="comma-separated; replicated first"
    )
    parser.add_argument("--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold")
    args = parser.parse_args()
    if not args.glibc_default:
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")  # read by each spawned rank at start
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        build_tiny_model(
            model,
            vocab=None,
            hidden_size=args.hidden,
            heads=args.hidden // 64,
            kv_heads=args.hidden // 128,
            layers=args.layers,
            intermediate_size=args.hidden * 8 // 3,
        )
        for strategy in args.strategies.split(","):
            out = Path(tmp) / f"{strategy}.json"
            store = Path(tmp) / f"{strategy}.store"
            mp.spawn(
                _rank, args=(str(model), strategy, args.steps, str(store), str(out)), nprocs=2, join=True
            )
            ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
            results[strategy] = {**ranks[0], "peak1": ranks[1]["peak"]}
    base = results["replicated"]
    table = Table(title=f"2 workers, {base['params_m']:.0f}M parameters, {args.steps} updates")
    for col in ("strategy", "state MB", "rss MB", "peak MB rank 0", "peak MB rank 1", "step s", "sync s"):
        table.add_column(col, justify="right")
    for strategy, r in results.items():
        table.add_row(
            strategy,
            *(f"{r[k]:.0f} ({r[k] / base[k]:.2f}x)" for k in ("state", "rss", "peak", "peak1")),
            *(f"{r[k]:.2f} ({r[k] / base[k]:.2f}x)" for k in ("step", "sync")),
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
