"""Process groups through the runtime: two real gloo ranks, backend from the plugin, preflight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["RANK"] = str(rank)
    os.environ["RLPORT_SUMMARY"] = "0"
    import rlport
    from rlport.collectives import init_process_group

    results = init_process_group(rank, world, init_method=f"file://{init_file}")
    gathered = [torch.zeros(3) for _ in range(world)]
    dist.all_gather(gathered, torch.full((3,), float(rank)))
    line = f"{rlport.current().collectives_backend};{[(r.name, r.ok) for r in results]};{[g[0].item() for g in gathered]}"
    Path(out_dir, f"rank{rank}.txt").write_text(line)
    dist.destroy_process_group()


def test_two_ranks_initialise_with_plugin_backend_and_pass_preflight(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "gloo;[('all_reduce exact', True)];[0.0, 1.0]"


def test_preflight_catches_a_wrong_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.collectives import init_process_group
    from rlport.errors import RlportError

    real = dist.all_reduce

    def averaging(tensor, *args, **kwargs):  # a broken backend: averages instead of sums
        real(tensor, *args, **kwargs)
        tensor.div_(2)

    monkeypatch.setattr(dist, "all_reduce", averaging)
    try:
        with pytest.raises(RlportError) as info:
            init_process_group(0, 1, init_method=f"file://{tmp_path}/pg")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert (
        "all_reduce exact: sum of rank+1 over 1 ranks = 1; 1027 of 1027 elements wrong" in info.value.message
    )
    assert "rlport conformance" in info.value.fix
