"""Each device has a default generator; seeding makes draws on the device reproducible."""

from __future__ import annotations

import torch


def test_manual_seed_reproduces_draws():
    torch.simdev.manual_seed(123)
    a = torch.randn(8, device="simdev")
    torch.simdev.manual_seed(123)
    b = torch.randn(8, device="simdev")
    c = torch.randn(8, device="simdev")
    assert torch.equal(a.cpu(), b.cpu())
    assert not torch.equal(b.cpu(), c.cpu())


def test_torch_manual_seed_seeds_the_device():
    torch.manual_seed(7)
    a = torch.rand(5, device="simdev")
    torch.manual_seed(7)
    b = torch.rand(5, device="simdev")
    assert torch.equal(a.cpu(), b.cpu())
    assert torch.simdev.initial_seed() == 7


def test_device_generator_is_not_the_cpu_generator():
    torch.manual_seed(3)
    torch.randn(100)  # advances only the CPU generator
    a = torch.randn(4, device="simdev")
    torch.manual_seed(3)
    b = torch.randn(4, device="simdev")
    assert torch.equal(a.cpu(), b.cpu())


def test_devices_have_their_own_generators():
    torch.manual_seed(11)
    a0 = torch.randn(4, device="simdev:0")
    torch.manual_seed(11)
    torch.randn(100, device="simdev:1")
    b0 = torch.randn(4, device="simdev:0")
    assert torch.equal(a0.cpu(), b0.cpu())


def test_rng_state_roundtrip_and_explicit_generator():
    state = torch.simdev.get_rng_state()
    a = torch.randn(3, device="simdev")
    torch.simdev.set_rng_state(state)
    b = torch.randn(3, device="simdev")
    assert torch.equal(a.cpu(), b.cpu())
    g = torch.Generator(device="simdev")
    assert g.device.type == "simdev"
    g.manual_seed(5)
    x = torch.randn(3, device="simdev", generator=g)
    g.manual_seed(5)
    y = torch.randn(3, device="simdev", generator=g)
    assert torch.equal(x.cpu(), y.cpu())


def test_dropout_and_multinomial_reproducible():
    def draw():
        torch.manual_seed(0)
        x = torch.ones(64, device="simdev")
        d = torch.nn.functional.dropout(x, 0.5, training=True)
        m = torch.multinomial(torch.ones(10, device="simdev"), 5)
        return d.cpu(), m.cpu()

    (d1, m1), (d2, m2) = draw(), draw()
    assert torch.equal(d1, d2) and torch.equal(m1, m2)
    assert 0 < int((d1 == 0).sum()) < 64
