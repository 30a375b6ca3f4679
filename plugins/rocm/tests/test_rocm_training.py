"""The rocm plugin's optimizer: ROCm's apex ``FusedAdam`` (AdamW mode) where apex and ``amp_C``
import, against the recording fake of ``rlport.fakes.fused_adam``; the reference otherwise. No
apex kernel or AMD GPU ran."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from rlport_rocm import RocmPlugin

from rlport.fakes.fused_adam import FakeFusedAdam
from rlport.testing import hook_runtime
from rlport.types import DeviceInfo

GPU = DeviceInfo(device_type="cuda", count=1, device_module="torch.cuda", collectives_backend="nccl")


@pytest.fixture(autouse=True)
def _no_cuda_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference asks torch whether a fused AdamW exists for ``cuda``, which a CPU build cannot
    answer: say no, so it builds the foreach AdamW on these host tensors."""
    monkeypatch.setattr("rlport.optim.has_fused_adamw", lambda device_type: False)


def test_apex_fused_adam_where_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeFusedAdam("FusedAdam", requires=("amp_C",))
    monkeypatch.setitem(sys.modules, "apex", types.ModuleType("apex"))
    monkeypatch.setitem(sys.modules, "apex.optimizers", fake.module("apex.optimizers"))
    monkeypatch.setitem(sys.modules, "amp_C", types.ModuleType("amp_C"))
    rt = hook_runtime({"rocm": RocmPlugin()}, GPU)
    factory, plugin = rt.optimizer_factory("adamw", "replicated")
    assert plugin == "rocm"
    p = torch.nn.Parameter(torch.ones(2))
    factory([p], lr=0.5, betas=(0.9, 0.99), weight_decay=0.0)
    assert fake.calls[0][1]["adam_w_mode"] is True and fake.calls[0][1]["lr"] == 0.5
    monkeypatch.delitem(sys.modules, "apex.optimizers")
    monkeypatch.setitem(sys.modules, "apex.optimizers", None)  # apex not installed
    assert rt.optimizer_factory("adamw", "replicated")[1] == "reference"
