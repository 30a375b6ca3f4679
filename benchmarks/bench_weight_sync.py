"""Weight sync per step: the reference transports against today's whole-model file path.

Run: ``python benchmarks/bench_weight_sync.py`` (``--help`` for sizes). Two models are built
locally (nothing is downloaded): the CPU demo's (``rlport train --demo``: hidden 128, 2 layers) and a
larger one (default about 68M parameters). Each step perturbs the trainer's weights, syncs them into
the engine, and checks the engine then holds exactly the trainer's weights (sha256 per tensor).

Engine in this process (the ``hf`` engine):
  ``file, whole model``   today's path: the whole model to one safetensors file in /dev/shm, loaded
                          back, then ``update_weights``;
  ``in-process buckets``  the reference: buckets straight into ``update_weights``, no file.
Engine in another process (a spawned process holding preallocated weights, reached as vLLM's
workers are, through ``receive_weights``):
  ``file, whole model``   today's path (what the vLLM engine did on every step);
  ``file buckets``        the reference for such an engine: one bounded file per bucket;
  ``cpu-ipc buckets``     :class:`DeviceIpcTransport` with device type ``cpu``: one shared-memory
                          staging buffer per bucket (a GPU plugin returns it for ``cuda``; not
                          measured here, no GPU in this run).

Figures: seconds per sync (best of ``--steps``: other load on the machine only slows a sync down),
the largest bucket the transport formed, peak extra host memory during a sync (this
process's anonymous memory plus the machine's shared memory, plus the receiving process's own
anonymous memory; :mod:`rlport.memory.peak`) against the model's bytes, and both as ratios to
today's file path measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RLPORT_SUMMARY", "0")


@dataclass
class Row:
    placement: str
    method: str
    seconds: float
    extra: int
    exact: bool


class InProcessWorker:
    """The hf engine reached through ``receive_weights`` (the unpacking runs in this process)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def receive_weights(self, unpack: str, payload: Any) -> None:
        from rlport.rollout.transport import resolve_unpack

        self.engine.update_weights(resolve_unpack(unpack)(payload))


def measure(
    sync: Callable[[], None], check: Callable[[], bool], perturb: Callable[[], None], steps: int
) -> tuple[float, int, bool]:
    from rlport.memory.peak import HostPeak

    times, peaks, exact = [], [], True
    for _ in range(steps):
        perturb()
        with HostPeak() as peak:
            start = time.perf_counter()
            sync()
            times.append(time.perf_counter() - start)
        peaks.append(peak.extra_bytes)
        exact = exact and check()
    return min(times), max(peaks), exact


def bench_model(label: str, folder: Path, args: argparse.Namespace) -> tuple[int, list[Row]]:
    import torch
    from transformers import AutoModelForCausalLM

    import rlport
    from rlport.rollout import EngineConfig
    from rlport.rollout.process_receiver import ProcessReceiver, digests
    from rlport.rollout.transport import DeviceIpcTransport, FileTransport, InProcessTransport, buckets

    bucket = args.bucket_mb << 20
    trainer = AutoModelForCausalLM.from_pretrained(folder).eval()
    named = lambda: ((n, p.detach()) for n, p in trainer.named_parameters())  # noqa: E731
    model_bytes = sum(p.numel() * p.element_size() for p in trainer.parameters())
    gen = torch.Generator().manual_seed(0)

    def perturb() -> None:
        with torch.no_grad():
            for p in trainer.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 1e-3)

    rows: list[Row] = []
    engine = rlport.current().make_engine("hf", EngineConfig(model=str(folder)))
    worker = InProcessWorker(engine)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    same = {
        "file, whole model (today)": lambda: FileTransport(1 << 62, shm).send(worker, named()),
        "in-process buckets (reference)": lambda: InProcessTransport(bucket).send(engine, named()),
    }
    in_engine = lambda: digests(engine.model.named_parameters()) == digests(trainer.named_parameters())  # noqa: E731
    for method, sync in same.items():
        sec, extra, exact = measure(sync, in_engine, perturb, args.steps)
        rows.append(Row("engine in this process", method, sec, extra, exact))
    engine.shutdown()

    other = {
        "file, whole model (today)": lambda r: FileTransport(1 << 62, shm).send(r, named()),
        "file buckets (reference)": lambda r: FileTransport(bucket, shm).send(r, named()),
        "cpu-ipc buckets": lambda r: DeviceIpcTransport("cpu", bucket).send(r, named()),
    }
    for method, send in other.items():
        receiver = ProcessReceiver(trainer.named_parameters())
        sec, extra, _ = measure(lambda r=receiver, s=send: s(r), lambda: True, perturb, args.steps)
        exact = receiver.digests() == digests(trainer.named_parameters())
        rows.append(Row("engine in another process", method, sec, extra + receiver.peak_extra_bytes, exact))
    largest = max(sum(p.numel() * p.element_size() for _, p in b) for b in buckets(named(), bucket))
    print(
        f"{label}: {model_bytes / 2**20:.1f} MiB of weights; bucket bound {args.bucket_mb} MiB, "
        f"largest bucket formed {largest / 2**20:.1f} MiB (a module group is never split)",
        flush=True,
    )
    return model_bytes, rows


def report(label: str, model_bytes: int, rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{label}: {model_bytes / 2**20:.1f} MiB of weights", title_justify="left")
    for column in (
        "engine",
        "transport",
        "s / sync",
        "x today",
        "peak extra MiB",
        "x model",
        "x today",
        "exact",
    ):
        table.add_column(column, justify="left" if column in ("engine", "transport") else "right")
    for row in rows:
        base = next(r for r in rows if r.placement == row.placement and "today" in r.method)
        table.add_row(
            row.placement,
            row.method,
            f"{row.seconds:.4f}",
            f"{row.seconds / base.seconds:.2f}",
            f"{row.extra / 2**20:.1f}",
            f"{row.extra / model_bytes:.2f}",
            f"{row.extra / max(1, base.extra):.2f}",
            "yes" if row.exact else "NO",
        )
    Console(width=150).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bucket-mb", type=int, default=16)
    parser.add_argument("--large-hidden", type=int, default=1024)
    parser.add_argument("--large-layers", type=int, default=6)
    parser.add_argument("--no-large", action="store_true", help="only the demo model")
    args = parser.parse_args()

    import torch

    import rlport
    from rlport.rollout.tiny import build_tiny_model
    from rlport.train.loading import quiet_transformers

    quiet_transformers()
    rlport.init()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        models = [("demo model", build_tiny_model(Path(tmp) / "demo", vocab=None, seed=0))]
        if not args.no_large:
            h = args.large_hidden
            models.append(
                (
                    f"large model (hidden {h}, {args.large_layers} layers)",
                    build_tiny_model(
                        Path(tmp) / "large",
                        vocab=None,
                        hidden_size=h,
                        heads=h // 128,
                        kv_heads=max(1, h // 512),
                        layers=args.large_layers,
                        intermediate_size=int(h * 2.75),
                    ),
                )
            )
        for label, folder in models:
            model_bytes, rows = bench_model(label, folder, args)
            report(label, model_bytes, rows)


if __name__ == "__main__":
    main()
