"""The collectives cases' worker: ``WORLD_SIZE`` spawned ranks, each starting the runtime of the plugin
under test and its process group through ``rlport.collectives``, then running every planned case (a
case naming a ``task`` runs that function instead: the training group's sharded optimizer case).

Inputs are small integers (1..7, distinct per rank at every index, following a hash of the index so
the pattern never repeats: a chunk or bucket in the wrong place differs from the right one), so every
exact result is representable in every dtype whatever the reduction order: tolerance is zero and each
case reports its ``#wrong`` element count, as nccl-tests does. Large tensors (tens of MiB, past
DDP's 25 MiB buckets) are built and checked a slice at a time. Each rank writes its results to a JSON file; the
pytest process turns missing files into CRASH or TIMEOUT.
"""

from __future__ import annotations

import functools
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


#: Elements per slice when a large input is built or checked (bounds the temporaries).
SLICE = 1 << 20


def index_hash(i: Any) -> Any:
    """Fibonacci hashing of the element index: the top 16 of the low 32 bits of ``i * 2654435761``,
    whose period (2**32 elements) is far past any case, unlike ``i mod 7``."""
    return ((i * 0x9E3779B1) & 0xFFFFFFFF) >> 16


@functools.lru_cache(maxsize=80)
def hashes(start: int, count: int) -> Any:
    """``hash(i) mod 7`` for ``i`` in ``start .. start+count-1`` (uint8, cached: every case of one
    size reads the same slices; 80 slices of 1 MiB bound the cache)."""
    import torch

    return (index_hash(torch.arange(start, start + count, dtype=torch.int64)) % 7).to(torch.uint8)


def values(rank: int, start: int, count: int, h: Any = None) -> Any:
    """Rank ``rank``'s input elements ``start .. start+count-1``: ``((hash(i) + 3 rank) mod 7) + 1``
    (int32; distinct per rank at every index for up to 7 ranks; no repeating pattern along the
    index). ``h``: :func:`hashes` of the same range, when the caller has it already."""
    import torch

    h = hashes(start, count) if h is None else h
    return (h.to(torch.int32) + 3 * rank) % 7 + 1


def reduce_inputs(reduce_op: str, rank: int, world: int, count: int, start: int = 0) -> Any:
    """Rank ``rank``'s all_reduce input for ``reduce_op``, built so that the exact result is
    representable in every dtype (bfloat16 included) whatever the reduction order, and follows the
    index hash (no repeating pattern): for product -2, -1, 1 and 2 (a result of plus or minus a power
    of two, at most ``2**world``: the sign is checked too); for min and max :func:`values` minus 4
    (-3 .. 3, distinct per rank: negative floats order the other way from their bit patterns); for
    avg :func:`values` with the last rank's raised so that the sum is a multiple of ``world`` (the
    mean is an integer); for sum :func:`values`. Int32."""
    return _table(reduce_op, rank, world)[hashes(start, count).long()]


def reduce_expected(reduce_op: str, world: int, count: int, start: int = 0) -> Any:
    """The exact (int32) all_reduce result of :func:`reduce_inputs` over ``world`` ranks."""
    return _table(reduce_op, None, world)[hashes(start, count).long()]


@functools.lru_cache(maxsize=256)
def _table(reduce_op: str, rank: int | None, world: int) -> Any:
    """Every element is a function of its index hash (0 .. 6) alone, so inputs and results are looked
    up in a 7-entry table (the same cost at any world size): rank ``rank``'s input, or with
    ``rank=None`` the result over ``world`` ranks, folded rank by rank."""
    import torch

    h = torch.arange(7, dtype=torch.uint8)
    if rank is not None:
        return _reduce_inputs(reduce_op, rank, world, h)
    fold = {
        "sum": torch.add,
        "avg": torch.add,
        "product": torch.mul,
        "min": torch.minimum,
        "max": torch.maximum,
    }
    acc = _reduce_inputs(reduce_op, 0, world, h)
    for r in range(1, world):
        acc = fold[reduce_op](acc, _reduce_inputs(reduce_op, r, world, h))
    return acc // world if reduce_op == "avg" else acc


def _reduce_inputs(reduce_op: str, rank: int, world: int, h: Any) -> Any:
    v = values(rank, 0, 0, h)
    if reduce_op == "product":
        return (v % 2 + 1) * (1 - 2 * (v > 4).to(v.dtype))
    if reduce_op in ("min", "max"):
        return v - 4
    if reduce_op == "avg" and rank == world - 1:
        others = sum(values(r, 0, 0, h) for r in range(world - 1))
        return v + (-(others + v)) % world
    return v


def _dtype(name: str) -> Any:
    import torch

    return {
        "float32": torch.float32,
        "int32": torch.int32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[name]


def _filled(count: int, dtype: Any, device: str, make: Any) -> Any:
    """A ``count``-element tensor whose slice ``[a, b)`` is ``make(a, b - a)``, built a slice at a time."""
    import torch

    out = torch.empty(count, dtype=dtype, device=device)
    for a in range(0, count, SLICE):
        n = min(SLICE, count - a)
        out[a : a + n] = make(a, n).to(dtype).to(device)
    return out


def _wrong(got: Any, expected: Any, total: int) -> dict[str, Any]:
    """Compare ``got`` with ``expected(a, n)`` (integer slices) a slice at a time."""
    wrong, first = 0, None
    flat = got.reshape(-1)
    for a in range(0, total, SLICE):
        n = min(SLICE, total - a)
        # the expected integers are exact in the tensor's dtype: compared there, no wider copy
        bad = flat[a : a + n].cpu() != expected(a, n).to(flat.dtype)
        count = int(bad.sum())
        if count and first is None:
            first = a + int(bad.nonzero()[0])
        wrong += count
    return {"wrong": wrong, "numel": total, "first_wrong_index": first}


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
    """Run one collective and count wrong elements against the exact expectation (integers, compared in its dtype)."""
    import torch
    import torch.distributed as dist

    dtype = _dtype(dtype_name)
    if op == "all_reduce":
        name = reduce_op or "sum"
        tensor = _filled(count, dtype, device, lambda a, n: reduce_inputs(name, rank, world, n, a))
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, name.upper()))
        return _wrong(tensor, lambda a, n: reduce_expected(name, world, n, a), count)
    if op == "all_gather":
        mine = _filled(count, dtype, device, lambda a, n: values(rank, a, n))
        outs = [torch.zeros(count, dtype=dtype, device=device) for _ in range(world)]
        dist.all_gather(outs, mine)
        del mine
        results = [_wrong(out, lambda a, n, r=r: values(r, a, n), count) for r, out in enumerate(outs)]
        firsts = [r * count + x["first_wrong_index"] for r, x in enumerate(results) if x["wrong"]]
        return {
            "wrong": sum(x["wrong"] for x in results),
            "numel": count * world,
            "first_wrong_index": firsts[0] if firsts else None,
        }
    if op == "reduce_scatter":
        full = _filled(count * world, dtype, device, lambda a, n: values(rank, a, n))
        out = torch.zeros(count, dtype=dtype, device=device)
        fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        fn(out, full)
        del full
        return _wrong(out, lambda a, n: reduce_expected("sum", world, n, rank * count + a), count)
    if op == "broadcast":
        assert root is not None
        tensor = _filled(count, dtype, device, lambda a, n: values(rank, a, n))
        dist.broadcast(tensor, src=root)
        return _wrong(tensor, lambda a, n: values(root, a, n), count)
    raise ValueError(f"unknown collective {op!r}")


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


def _task(spec: str) -> Any:
    """The function ``module:function`` names; it takes ``(case, rt, rank, world, device)`` and returns
    this rank's JSON-able result for the case."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


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
                if "task" in c:  # another group's multi-rank case: ``module:function`` run on every rank
                    result["cases"][c["id"]] = _task(c["task"])(c, rt, rank, world, device)
                    continue
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
