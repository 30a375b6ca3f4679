"""Kernels on simdev give the CPU's results; device rules are those of a real accelerator."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def test_tensor_lives_on_simdev(dev):
    x = torch.ones(3, device="simdev")
    assert x.device == dev
    assert x.is_simdev
    assert x.device.type == "simdev"
    y = torch.ones(2).simdev()
    assert y.device.type == "simdev"


def test_arithmetic_matches_cpu(dev):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 7, generator=g)
    b = torch.randn(7, 3, generator=g)
    da, db = a.to(dev), b.to(dev)
    cases = {
        "matmul": (a @ b, da @ db),
        "softmax": (a.softmax(-1), da.softmax(-1)),
        "sum_dim": (a.sum(0), da.sum(0)),
        "transpose_contig": (a.t().contiguous(), da.t().contiguous()),
        "where": (torch.where(a > 0, a, -a), torch.where(da > 0, da, -da)),
        "cat": (torch.cat([a, a * 2]), torch.cat([da, da * 2])),
        "index": (a[torch.tensor([0, 3])], da[torch.tensor([0, 3], device=dev)]),
        "slice_step": (a[:, ::2] * 3, da[:, ::2] * 3),
        "bf16": (a.bfloat16() @ b.bfloat16(), da.bfloat16() @ db.bfloat16()),
        "argmax": (a.argmax(-1), da.argmax(-1)),
        "nonzero": ((a > 0).nonzero(), (da > 0).nonzero()),
    }
    for name, (want, got) in cases.items():
        assert got.device == dev, name
        assert torch.equal(got.cpu(), want), name


def test_inplace_and_out_ops(dev):
    a = torch.arange(6.0).reshape(2, 3)
    d = a.to(dev)
    d.mul_(2).add_(1)
    assert torch.equal(d.cpu(), a * 2 + 1)
    view = d[:, 1]
    view.zero_()
    assert d.cpu()[:, 1].eq(0).all()
    out = torch.empty(0, device=dev)
    torch.add(d, d, out=out)  # out= resized by the kernel
    assert out.shape == (2, 3) and out.device == dev
    assert torch.equal(out.cpu(), d.cpu() * 2)
    assert d.sum().item() == pytest.approx(float((a * 2 + 1)[:, [0, 2]].sum()))
    assert d.tolist() == d.cpu().tolist()


def test_autograd_matches_cpu(dev):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.LayerNorm(12), nn.Linear(12, 3))
    x = torch.randn(4, 6)
    target = torch.randn(4, 3)
    ref = [p.detach().clone() for p in model.parameters()]
    loss_cpu = nn.functional.mse_loss(model(x), target)
    loss_cpu.backward()
    grads_cpu = [p.grad.clone() for p in model.parameters()]

    model_dev = model.to(dev)
    model_dev.zero_grad()
    for p, r in zip(model_dev.parameters(), ref, strict=True):
        assert p.device == dev and torch.equal(p.detach().cpu(), r)
    loss_dev = nn.functional.mse_loss(model_dev(x.to(dev)), target.to(dev))
    loss_dev.backward()
    assert loss_dev.item() == pytest.approx(loss_cpu.item(), rel=1e-6)
    for p, g in zip(model_dev.parameters(), grads_cpu, strict=True):
        assert p.grad.device == dev
        torch.testing.assert_close(p.grad.cpu(), g, rtol=1e-5, atol=1e-6)


def test_silu_backward_uses_the_host_kernel(dev):
    x = torch.randn(64, requires_grad=True)
    xd = x.detach().to(dev).requires_grad_()
    nn.functional.silu(x).sum().backward()
    nn.functional.silu(xd).sum().backward()
    assert torch.equal(xd.grad.cpu(), x.grad)


def test_sdpa_and_optimizer_step(dev):
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    want = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    got = nn.functional.scaled_dot_product_attention(q.to(dev), k.to(dev), v.to(dev), is_causal=True)
    assert torch.equal(got.cpu(), want)  # the host's kernel choice (flash for cpu), not the math path
    p_cpu = nn.Parameter(torch.randn(4))
    p_dev = nn.Parameter(p_cpu.detach().to(dev))
    for p in (p_cpu, p_dev):
        opt = torch.optim.AdamW([p], lr=0.1)
        (p * p).sum().backward()
        opt.step()
    torch.testing.assert_close(p_dev.detach().cpu(), p_cpu.detach())


def test_tensors_on_two_devices_do_not_mix():
    a = torch.ones(3, device="simdev:0")
    b = torch.ones(3, device="simdev:1")
    with pytest.raises(RuntimeError, match="same device"):
        a + b
    assert torch.equal((a + b.to("simdev:0")).cpu(), torch.full((3,), 2.0))


def test_host_tensor_given_to_a_device_op_is_refused(dev):
    with pytest.raises(RuntimeError, match="same device"):
        torch.ones(3, device=dev) + torch.ones(3)
    # a 0-dim host tensor is a scalar, as on CUDA
    assert torch.equal((torch.ones(3, device=dev) + torch.tensor(2.0)).cpu(), torch.full((3,), 3.0))


def test_numpy_needs_an_explicit_copy(dev):
    x = torch.ones(2, device=dev)
    with pytest.raises(TypeError):
        x.numpy()
    assert x.cpu().numpy().tolist() == [1.0, 1.0]


def test_autocast_runs_matrix_products_in_lower_precision(dev):
    a = torch.randn(3, 4, device=dev)
    lin = nn.Linear(4, 2).to(dev)
    with torch.autocast("simdev", dtype=torch.bfloat16):
        assert (a @ a.t()).dtype == torch.bfloat16
        assert lin(a).dtype == torch.bfloat16
        assert (a + a).dtype == torch.float32
    want = (a.cpu().bfloat16() @ a.cpu().t().bfloat16()).float()
    with torch.autocast("simdev", dtype=torch.bfloat16):
        got = (a @ a.t()).float().cpu()
    assert torch.equal(got, want)
