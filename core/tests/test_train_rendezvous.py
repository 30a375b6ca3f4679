"""The workers' rendezvous: rank 0's store keeps its port bound (nothing can take it between
choosing and using), ranks that never arrive are named after a bounded wait, an unreachable store
is a clear error in bounded time, and a real two-rank gloo group starts on the store."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from rlport.errors import RlportError
from rlport.train.workers import rendezvous


def test_the_store_keeps_its_port_bound() -> None:
    store = rendezvous.host_store("127.0.0.1", 10)
    port = int(store.port)
    assert port > 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError) as err:
        sock.bind(("127.0.0.1", port))
    assert err.value.errno == errno.EADDRINUSE
    client = rendezvous.connect_store("127.0.0.1", port, 1, 10)
    client.set("k", "v")
    assert store.get("k") == b"v"


def test_every_rank_joins_or_the_missing_ones_are_named() -> None:
    store = rendezvous.host_store("127.0.0.1", 10)
    clients = [rendezvous.connect_store("127.0.0.1", int(store.port), r, 10) for r in (1, 2)]
    errors: list[BaseException] = []

    def join(s: object, rank: int) -> None:
        try:
            rendezvous.wait_for_ranks(s, rank, 3, 20)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=join, args=(s, r))
        for s, r in ((store, 0), *zip(clients, (1, 2), strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []

    alone = rendezvous.host_store("127.0.0.1", 10)
    late = rendezvous.connect_store("127.0.0.1", int(alone.port), 2, 10)
    late.set("rlport/joined/2", "1")
    t0 = time.monotonic()
    with pytest.raises(RlportError) as err:
        rendezvous.wait_for_ranks(alone, 0, 4, 1.0)
    assert time.monotonic() - t0 < 15
    assert "rank(s) 1, 3 of 4 did not join the rendezvous within 1s" in err.value.message
    assert "trainer.startup_timeout_s" in err.value.fix


def test_an_unreachable_store_fails_in_bounded_time() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but never listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(RlportError) as err:
            rendezvous.connect_store("127.0.0.1", port, 1, 2.0)
    assert time.monotonic() - t0 < 30
    assert (
        f"rank 1 could not reach rank 0's rendezvous store at 127.0.0.1:{port} within 2s" in err.value.message
    )


def _group_rank(rank: int, port_file: str, out: str) -> None:
    import torch.distributed as dist

    import rlport
    from rlport.collectives import init_process_group

    os.environ["RLPORT_SUMMARY"] = "0"
    rlport.init()
    if rank == 0:
        store = rendezvous.host_store("127.0.0.1", 30)
        Path(port_file + ".tmp").write_text(str(store.port))
        os.replace(port_file + ".tmp", port_file)
    else:
        while not os.path.exists(port_file):
            time.sleep(0.05)
        store = rendezvous.connect_store("127.0.0.1", int(Path(port_file).read_text()), rank, 30)
    rendezvous.wait_for_ranks(store, rank, 2, 30)
    results = init_process_group(rank, 2, store=store, timeout_s=60)
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    if rank == 0:
        Path(out).write_text(f"{t.item()} {len(results)}")
    dist.destroy_process_group()


def test_a_process_group_starts_on_the_store(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "sum"
    mp.spawn(_group_rank, args=(str(tmp_path / "port"), str(out)), nprocs=2, join=True)
    total, checks = out.read_text().split()
    assert float(total) == 3.0 and int(checks) >= 1  # the all-reduce and the plugin's preflight ran
