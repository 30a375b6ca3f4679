"""The collectives cases' worker: ``WORLD_SIZE`` spawned ranks, each starting the runtime of the plugin
under test and its process group through ``rlport.collectives``, then running every planned case.

Inputs are small integers (1..7, distinct per rank at every index), so every exact result is
representable in every dtype whatever the reduction order: tolerance is zero and each case reports
its ``#wrong`` element count, as nccl-tests does. Each rank writes its results to a JSON file; the
pytest process turns missing files into CRASH or TIMEOUT.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

#: nccl-tests' bus-bandwidth factors for n ranks.
BUSBW_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
}
PERF_BYTES = 16 * 1024 * 1024
PERF_REPEATS = 5


def values(rank: int, start: int, count: int) -> Any:
    """Rank ``rank``'s input elements ``start .. start+count-1``: ``((5 i + 3 rank) mod 7) + 1``."""
    import torch

    i = torch.arange(start, start + count, dtype=torch.int64)
    return (5 * i + 3 * rank) % 7 + 1


def reduce_inputs(reduce_op: str, rank: int, world: int, count: int) -> Any:
    """Rank ``rank``'s all_reduce input for ``reduce_op``, built so that the exact result is
    representable in every dtype (bfloat16 included) whatever the reduction order: 1 and 2 for
    product (at most 2**world), :func:`values` for min and max, and for avg :func:`values` with the
    last rank's raised so that the sum is a multiple of ``world`` (the mean is an integer)."""
    if reduce_op == "product":
        return values(rank, 0, count) % 2 + 1
    if reduce_op == "avg" and rank == world - 1:
        others = sum(values(r, 0, count) for r in range(world - 1))
        mine = values(rank, 0, count)
        return mine + (-(others + mine)) % world
    return values(rank, 0, count)


def reduce_expected(reduce_op: str, world: int, count: int) -> Any:
    """The exact (int64) all_reduce result of :func:`reduce_inputs` over ``world`` ranks."""
    import torch

    stacked = torch.stack([reduce_inputs(reduce_op, r, world, count) for r in range(world)])
    return {
        "sum": lambda: stacked.sum(0),
        "product": lambda: stacked.prod(0),
        "min": lambda: stacked.min(0).values,
        "max": lambda: stacked.max(0).values,
        "avg": lambda: stacked.sum(0) // world,
    }[reduce_op]()


def _dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "int32": torch.int32, "bfloat16": torch.bfloat16}[name]


def run_case(
    op: str,
    dtype_name: str,
    count: int,
    root: int | None,
    rank: int,
    world: int,
    device: str,
    reduce_op: str | None = None,
) -> dict[str, Any]:
    """Run one collective and count wrong elements against the exact expectation (computed in int64)."""
    import torch
    import torch.distributed as dist

    dtype = _dtype(dtype_name)
    if op == "all_reduce":
        name = reduce_op or "sum"
        tensor = reduce_inputs(name, rank, world, count).to(dtype).to(device)
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, name.upper()))
        got = tensor
        expected = reduce_expected(name, world, count)
    elif op == "all_gather":
        mine = values(rank, 0, count).to(dtype).to(device)
        outs = [torch.zeros(count, dtype=dtype, device=device) for _ in range(world)]
        dist.all_gather(outs, mine)
        got = torch.cat(outs)
        expected = torch.cat([values(r, 0, count) for r in range(world)])
    elif op == "reduce_scatter":
        full = values(rank, 0, count * world).to(dtype).to(device)
        out = torch.zeros(count, dtype=dtype, device=device)
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        fn(out, full)
        got = out
        expected = sum(values(r, rank * count, count) for r in range(world))
    elif op == "broadcast":
        assert root is not None
        tensor = values(rank, 0, count).to(dtype).to(device)
        dist.broadcast(tensor, src=root)
        got = tensor
        expected = values(root, 0, count)
    else:
        raise ValueError(f"unknown collective {op!r}")
    bad = got.cpu().double() != expected.double()
    wrong = int(bad.sum())
    first = int(bad.nonzero()[0]) if wrong else None
    return {"wrong": wrong, "numel": int(expected.numel()), "first_wrong_index": first}


def _perf(op: str, rank: int, world: int, device: str) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    count = PERF_BYTES // 4
    if op == "all_reduce":
        t = torch.ones(count, device=device)
        call, nbytes = (lambda: dist.all_reduce(t)), count * 4
    elif op == "all_gather":
        chunk = torch.ones(count // world, device=device)
        outs = [torch.empty_like(chunk) for _ in range(world)]
        call, nbytes = (lambda: dist.all_gather(outs, chunk)), count * 4
    elif op == "reduce_scatter":
        full = torch.ones(count, device=device)
        out = torch.empty(count // world, device=device)
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        call, nbytes = (lambda: fn(out, full)), count * 4
    else:
        t = torch.ones(count, device=device)
        call, nbytes = (lambda: dist.broadcast(t, src=0)), count * 4
    call()  # warm-up
    times = []
    for _ in range(PERF_REPEATS):
        dist.barrier()
        t0 = time.perf_counter()
        call()
        if device != "cpu":
            torch.empty(1, device=device).cpu()  # wait for the device
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "bytes": nbytes}


def rank_main(
    rank: int, world: int, init_file: str, out_dir: str, cases: list[dict[str, Any]], perf: bool
) -> None:
    """Entry point of one spawned rank (``torch.multiprocessing`` passes ``rank`` first)."""
    os.environ["RLPORT_SUMMARY"] = "0"
    os.environ["LOCAL_RANK"] = str(rank)
    result: dict[str, Any] = {"rank": rank, "cases": {}, "perf": {}}
    path = Path(out_dir) / f"rank{rank}.json"

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)

    try:
        import torch.distributed as dist

        import rlport
        from rlport.collectives import init_process_group, preflight

        rt = rlport.init()
        device = rt.torch_device(rank)
        init_process_group(rank, world, init_method=f"file://{init_file}", timeout_s=60, check=False)
        result["backend"] = {"expected": rt.collectives_backend, "actual": str(dist.get_backend())}
        try:
            result["preflight"] = [
                {"name": r.name, "ok": r.ok, "detail": r.detail, "fix": r.fix} for r in preflight()
            ]
        except Exception as exc:
            result["preflight_error"] = f"{type(exc).__name__}: {exc}"
        save()
        for c in cases:
            try:
                result["cases"][c["id"]] = run_case(
                    c["op"], c["dtype"], c["count"], c.get("root"), rank, world, device, c.get("reduce_op")
                )
            except Exception as exc:
                result["cases"][c["id"]] = {"error": f"{type(exc).__name__}: {exc}"}
        save()
        if perf:
            for op in BUSBW_FACTOR:
                try:
                    result["perf"][op] = _perf(op, rank, world, device)
                except Exception as exc:
                    result["perf"][op] = {"error": f"{type(exc).__name__}: {exc}"}
        dist.barrier()
        dist.destroy_process_group()
        result["done"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    save()


def spawn(
    cases: list[dict[str, Any]], workdir: Path, world: int, timeout: float, perf: bool
) -> dict[str, Any]:
    """Run the ranks; return ``{"ranks": [result per rank or None], "crashed": str|None, "timed_out": bool}``."""
    import torch.multiprocessing as mp

    workdir.mkdir(parents=True, exist_ok=True)
    init_file = workdir / "store"
    if init_file.exists():
        init_file.unlink()
    context = mp.start_processes(
        rank_main,
        args=(world, str(init_file), str(workdir), cases, perf),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    crashed: str | None = None
    timed_out = False
    try:
        while True:
            try:
                if context.join(timeout=1.0):
                    break
            except Exception as exc:  # a rank died (signal) or raised outside rank_main's own handler
                crashed = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
    finally:  # also when the case's time limit interrupts the wait: never leave ranks behind
        for process in context.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)
                if process.is_alive():
                    process.kill()
    ranks = []
    for r in range(world):
        file = workdir / f"rank{r}.json"
        ranks.append(json.loads(file.read_text()) if file.exists() else None)
    return {"ranks": ranks, "crashed": crashed, "timed_out": timed_out}
