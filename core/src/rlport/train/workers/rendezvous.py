"""The workers' rendezvous: a ``torch.distributed.TCPStore`` that rank 0 hosts and keeps bound.

Rank 0 opens the store on port 0 (the system picks a free port and the store holds it from that
moment, so no other process can take it between choosing and using), reports
``(node address, store.port)`` to the driver, and the other ranks connect to it. Every rank then
marks itself joined and waits, a bounded time, for all the others; a rank that never arrives is an
error naming it, not a hang. The process group starts on the same store
(``init_process_group(store=...)``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rlport.errors import RlportError

_JOINED = "rlport/joined/"


def node_address() -> str:
    """This node's address as Ray sees it (``127.0.0.1`` outside Ray)."""
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # not inside Ray
        return "127.0.0.1"


def host_store(host: str, timeout_s: float) -> Any:
    """Rank 0's store on ``host``, listening on a port the system chose (read it from ``.port``)."""
    import torch.distributed as dist

    return dist.TCPStore(
        host, 0, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
    )


def connect_store(host: str, port: int, rank: int, timeout_s: float) -> Any:
    """A client of rank 0's store at ``host:port``; an error naming both if it cannot be reached in
    ``timeout_s`` seconds."""
    import torch.distributed as dist

    try:
        return dist.TCPStore(
            host, port, is_master=False, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
        )
    except Exception as exc:  # DistNetworkError / DistStoreError / RuntimeError, by torch version
        raise RlportError(
            f"rank {rank} could not reach rank 0's rendezvous store at {host}:{port} within {timeout_s:g}s "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            f"check that the nodes reach each other on {host} (firewall, interface), or raise "
            "trainer.startup_timeout_s",
        ) from exc


def wait_for_ranks(store: Any, rank: int, world: int, timeout_s: float) -> None:
    """Mark ``rank`` joined, then wait until all ``world`` ranks have; an error naming the missing
    ranks after ``timeout_s`` seconds."""
    store.set(f"{_JOINED}{rank}", "1")
    keys = [f"{_JOINED}{r}" for r in range(world)]
    try:
        store.wait(keys, timedelta(seconds=timeout_s))
    except Exception as exc:
        missing = [r for r, key in enumerate(keys) if not store.check([key])]
        raise RlportError(
            f"rank {rank}: rank(s) {', '.join(map(str, missing)) or '?'} of {world} did not join the "
            f"rendezvous within {timeout_s:g}s",
            "look for their error above (a worker that failed to start), or raise trainer.startup_timeout_s",
        ) from exc
