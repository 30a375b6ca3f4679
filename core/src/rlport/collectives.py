"""Process groups through the active plugins: backend name, fabric environment, preflight.

``init_process_group`` asks the runtime for the backend (``rlport_collectives_backend``), applies the
merged environment of every active plugin (``rlport_collectives_env``; fabric plugins live here),
starts ``torch.distributed`` and runs every plugin's preflight. A failed preflight stops the run with
the check's fix; nothing proceeds on a group that gives wrong answers.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

import rlport
from rlport.errors import RlportError
from rlport.types import PreflightResult


def exact_all_reduce_check(group: Any = None) -> PreflightResult:
    """All-reduce ``rank + 1`` over 1027 elements (an unaligned count): the sum is exact."""
    rt = rlport.current()
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    tensor = torch.full((1027,), float(rank + 1), device=rt.torch_device())
    dist.all_reduce(tensor, group=group)
    expected = world * (world + 1) / 2
    wrong = int((tensor != expected).sum().item())
    return PreflightResult(
        name="all_reduce exact",
        ok=wrong == 0,
        detail=f"sum of rank+1 over {world} ranks = {expected:g}; {wrong} of 1027 elements wrong",
        fix="" if wrong == 0 else "the collectives backend returns wrong sums: run `rlport conformance`",
    )


def preflight(group: Any = None) -> list[PreflightResult]:
    """Every active plugin's preflight checks (collective: call on every rank)."""
    rt = rlport.current()
    results: list[PreflightResult] = []
    for answer in rt.each("rlport_collectives_preflight", backend=rt.collectives_backend, group=group):
        results.extend(answer.value)
    return results


def init_process_group(
    rank: int,
    world_size: int,
    *,
    init_method: str | None = None,
    timeout_s: float = 300.0,
    check: bool = True,
    store: Any = None,
) -> list[PreflightResult]:
    """Start the default process group with the plugin-chosen backend and run the preflight.

    ``store`` (a ``torch.distributed.Store`` every rank is already connected to) replaces
    ``init_method`` as the rendezvous.

    Returns the preflight results; raises :class:`RlportError` naming the failed check and its fix.
    """
    rt = rlport.current()
    for key, value in rt.collectives_env().items():
        previous = os.environ.get(key)
        if previous is not None and previous != value:
            raise RlportError(
                f"{key}={previous!r} is set in the environment, but an active plugin needs {value!r}",
                f"unset {key}, or export RLPORT_FABRICS= to run without fabric plugins",
            )
        os.environ[key] = value
    backend = rt.collectives_backend
    where: dict[str, Any] = (
        {"store": store} if store is not None else {"init_method": init_method or "env://"}
    )
    dist.init_process_group(
        backend=backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s), **where
    )
    if not check:
        return []
    results = preflight()
    failed = [r for r in results if not r.ok]
    if failed:
        raise RlportError(
            f"collectives preflight failed on backend {backend!r}: "
            + "; ".join(f"{r.name}: {r.detail}" for r in failed),
            failed[0].fix or "run `rlport doctor`",
        )
    return results
