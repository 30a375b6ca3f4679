"""The flash-attention rule: at most 2x torch's error plus a rounding floor; a warning above 1x."""

from __future__ import annotations

import torch

from rlport_conformance import attention_math as am
from rlport_conformance.status import Status
from rlport_conformance.tolerance import FLOOR_STEPS, judge


def test_rule_boundaries() -> None:
    rounding = 1e-4
    floor = FLOOR_STEPS * rounding
    assert judge(0.01 + floor, 0.01, rounding).status is Status.PASS
    assert judge(0.015 + floor, 0.01, rounding).status is Status.QUALITY_WARNING
    assert judge(0.02 + floor, 0.01, rounding).status is Status.QUALITY_WARNING
    failed = judge(0.0201 + floor, 0.01, rounding)
    assert failed.status is Status.FAIL
    assert failed.metrics["bound"] == 0.02 + floor
    assert judge(float("inf"), 0.01, rounding).status is Status.FAIL


def test_reference_semantics_bottom_right_causal() -> None:
    q = am.randn((1, 1, 2, 4), seed=1, dtype=torch.float32, device="cpu")
    k = am.randn((1, 1, 5, 4), seed=2, dtype=torch.float32, device="cpu")
    v = am.randn((1, 1, 5, 4), seed=3, dtype=torch.float32, device="cpu")
    out = am.reference(q, k, v, causal=True)
    # the last query sits at key position 4 and sees every key; the first sees keys 0..3
    full = am.reference(q[:, :, 1:], k, v, causal=False)
    first = am.reference(q[:, :, :1], k[:, :, :4], v[:, :, :4], causal=False)
    assert torch.allclose(out[:, :, 1:], full) and torch.allclose(out[:, :, :1], first)


def test_flops_count() -> None:
    assert am.flops(2, 8, 1024, 1024, 128, causal=False) == 4 * 2 * 1024 * 1024 * 8 * 128
    assert am.flops(2, 8, 1024, 1024, 128, causal=True) == 2 * 2 * 1024 * 1024 * 8 * 128
