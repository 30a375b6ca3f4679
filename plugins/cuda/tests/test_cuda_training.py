"""The cuda plugin's training parts, through the core's hook calls: apex's ``FusedAdam`` where apex
and its compiled ``amp_C`` import (against a fake apex, ``rlport.fakes.fused_adam``, that updates
with torch's AdamW math and records every argument), the reference's AdamW otherwise, and megatron
accepted by the strategy check. No apex kernel or GPU ran."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from rlport_cuda import CudaPlugin

from rlport.fakes.fused_adam import FakeFusedAdam
from rlport.testing import hook_runtime
from rlport.types import DeviceInfo

GPU = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", collectives_backend="nccl")


@pytest.fixture(autouse=True)
def _no_cuda_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference asks torch whether a fused AdamW exists for ``cuda``, which a CPU build cannot
    answer: say no, so it builds the foreach AdamW on these host tensors."""
    monkeypatch.setattr("rlport.optim.has_fused_adamw", lambda device_type: False)


@pytest.fixture
def apex(monkeypatch: pytest.MonkeyPatch) -> FakeFusedAdam:
    fake = FakeFusedAdam("FusedAdam", requires=("amp_C",))
    monkeypatch.setitem(sys.modules, "apex", types.ModuleType("apex"))
    monkeypatch.setitem(sys.modules, "apex.optimizers", fake.module("apex.optimizers"))
    monkeypatch.setitem(sys.modules, "amp_C", types.ModuleType("amp_C"))
    return fake


def _step(factory: object) -> tuple[torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = factory([p], lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)  # type: ignore[operator]
    p.grad = torch.randn(4, 3)
    opt.step()
    return opt, p.detach().clone()


def test_apex_fused_adam_in_adamw_mode_serves_replicated_and_ddp(apex: FakeFusedAdam) -> None:
    rt = hook_runtime({"cuda": CudaPlugin()}, GPU)
    for strategy in ("replicated", "ddp", "megatron"):
        factory, plugin = rt.optimizer_factory("adamw", strategy)
        assert plugin == "cuda" and repr(factory) == "apex.optimizers.FusedAdam (adam_w_mode=True)"
    opt, updated = _step(factory)
    assert type(opt).__name__ == "FusedAdam"
    assert apex.calls[0] == (
        "init",
        {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-8, "weight_decay": 0.1, "adam_w_mode": True},
    )
    assert apex.calls[1] == ("step", {"params": 1})
    _, expected = _step(lambda ps, **kw: torch.optim.AdamW(ps, foreach=False, **kw))
    assert torch.equal(updated, expected)  # decoupled weight decay: AdamW, not Adam with L2


def test_without_amp_c_or_under_fsdp_the_reference_answers(
    apex: FakeFusedAdam, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = hook_runtime({"cuda": CudaPlugin()}, GPU)
    factory, plugin = rt.optimizer_factory("adamw", "fsdp")  # DTensor parameters: torch's AdamW
    assert plugin == "reference" and isinstance(_step(factory)[0], torch.optim.AdamW)
    monkeypatch.setitem(sys.modules, "amp_C", None)  # apex built without --cuda_ext
    factory, plugin = rt.optimizer_factory("adamw", "ddp")
    assert plugin == "reference" and repr(factory).startswith("torch AdamW")
    assert apex.calls == []


def test_only_adamw_is_offered() -> None:
    assert CudaPlugin().rlport_optimizer(name="sgd", device=GPU, strategy="ddp") is None


def test_megatron_passes_the_strategy_check_on_the_gpu() -> None:
    rt = hook_runtime({"cuda": CudaPlugin()}, GPU)
    assert (
        "megatron" not in rt.unsupported_strategies()[0]
    )  # no refusal: the reference's CPU refusal is overridden
