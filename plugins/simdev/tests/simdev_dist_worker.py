"""One rank of a two-rank simdev/cpu run; started by test_distributed.py as its own process.

usage: simdev_dist_worker.py SCENARIO DEVICE RANK WORLD INIT_FILE OUT_FILE
Writes a dict of host tensors/values to OUT_FILE (torch.save).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn


def collectives(device: torch.device, rank: int, world: int) -> dict:
    out: dict = {}
    base = torch.arange(4, dtype=torch.float32, device=device) + 10 * rank
    for name, op in [
        ("sum", dist.ReduceOp.SUM),
        ("avg", dist.ReduceOp.AVG),
        ("max", dist.ReduceOp.MAX),
        ("min", dist.ReduceOp.MIN),
    ]:
        t = base.clone()
        dist.all_reduce(t, op=op)
        assert t.device == device
        out[f"all_reduce_{name}"] = t.cpu()
    gathered = [torch.empty(4, device=device) for _ in range(world)]
    dist.all_gather(gathered, base)
    out["all_gather"] = torch.stack([g.cpu() for g in gathered])
    flat = torch.empty(4 * world, device=device)
    dist.all_gather_into_tensor(flat, base)
    out["all_gather_into_tensor"] = flat.cpu()
    rs = torch.empty(2, device=device)
    dist.reduce_scatter_tensor(rs, base)
    out["reduce_scatter_tensor"] = rs.cpu()
    rs_avg = torch.empty(2, device=device)
    dist.reduce_scatter_tensor(rs_avg, base, op=dist.ReduceOp.AVG)
    out["reduce_scatter_tensor_avg"] = rs_avg.cpu()
    rsl = torch.empty(2, device=device)
    dist.reduce_scatter(rsl, [base[:2].clone(), base[2:].clone()])
    out["reduce_scatter"] = rsl.cpu()
    b = base.clone()
    dist.broadcast(b, src=1)
    out["broadcast"] = b.cpu()
    work = dist.all_reduce(base.clone(), async_op=True)
    work.wait()
    host = torch.full((3,), float(rank))
    dist.all_reduce(host)
    out["host_all_reduce"] = host
    dist.barrier()
    out["devices"] = str(device)
    return out


def _model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)


def _data(rank: int, step: int, device: torch.device):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(5, 8, generator=g).to(device), torch.randn(5, 4, generator=g).to(device)


def train(device: torch.device, rank: int, world: int, strategy: str) -> dict:
    model = _model(device)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ddp_kwargs = {"device_ids": [device.index]} if device.type != "cpu" else {}
        wrapped = DistributedDataParallel(model, **ddp_kwargs)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        wrapped = fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=0.05)
    losses = []
    for step in range(3):
        x, y = _data(rank, step, device)
        loss = ((wrapped(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    params = {}
    for name, p in wrapped.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        params[name.replace("module.", "")] = full.detach().cpu()
    return {"params": params, "losses": losses, "param_device": str(next(model.parameters()).device)}


def main() -> None:
    scenario, device_type, rank_s, world_s, init_file, out_file = sys.argv[1:7]
    rank, world = int(rank_s), int(world_s)
    if device_type == "simdev":
        import rlport_simdev

        rlport_simdev.register()
        torch.simdev.set_device(rank)
        device = torch.device("simdev", rank)
        backend = "cpu:gloo,simdev:simdev"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if scenario == "collectives":
            result = collectives(device, rank, world)
        else:
            result = train(device, rank, world, scenario)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    torch.save(result, out_file)


if __name__ == "__main__":
    main()
