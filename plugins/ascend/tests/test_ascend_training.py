"""The ascend plugin's training parts, through the core's hook calls: torch_npu's fused AdamW (the
fake ``torch_npu.optim.NpuFusedAdamW`` of tests/fake_npu, torch's AdamW math, every argument
recorded) and MindSpeed's adaptor imported before Megatron for ``actor.strategy=megatron`` (a fake
``mindspeed`` package written per test that records what was imported before it). No NPU ran."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from ascend_fakes import fake_npu_fixture  # noqa: F401  (the fixture "fake_npu")

from rlport.errors import RlportError
from rlport.testing import hook_runtime
from rlport.types import DeviceInfo
from rlport_ascend import AscendPlugin

NPU = DeviceInfo(device_type="npu", count=1, device_module="torch.npu", collectives_backend="hccl")


@pytest.fixture(autouse=True)
def _no_npu_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference asks torch for a fused AdamW on ``npu``, which the host cannot answer."""
    monkeypatch.setattr("rlport.optim.has_fused_adamw", lambda device_type: False)


def test_npu_fused_adamw_for_plain_tensor_strategies(fake_npu: ModuleType) -> None:
    import torch_npu.optim as npu_optim

    npu_optim.FAKE.calls.clear()
    rt = hook_runtime({"ascend": AscendPlugin()}, NPU)
    factory, plugin = rt.optimizer_factory("adamw", "ddp")
    assert plugin == "ascend" and repr(factory) == "torch_npu.optim.NpuFusedAdamW"
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    opt = factory([p], lr=0.1, betas=(0.9, 0.9), weight_decay=0.01)
    p.grad = torch.ones(5)
    opt.step()
    assert npu_optim.FAKE.calls[0] == (
        "init",
        {"lr": 0.1, "betas": (0.9, 0.9), "eps": 1e-8, "weight_decay": 0.01},  # no adam_w_mode
    )
    assert rt.optimizer_factory("adamw", "fsdp")[1] == "reference"


def _mindspeed(root: Path) -> None:
    """A fake ``mindspeed.megatron_adaptor`` that records the megatron modules loaded before it."""
    pkg = root / "mindspeed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "megatron_adaptor.py").write_text(
        "import sys\nBEFORE = sorted(m for m in sys.modules if m.startswith('megatron.core'))\n"
    )


@pytest.fixture
def clean_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("mindspeed", "megatron")]:
        monkeypatch.delitem(sys.modules, name)


def test_megatron_imports_the_adaptor_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None
) -> None:
    _mindspeed(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rt = hook_runtime({"ascend": AscendPlugin()}, NPU)
    assert "megatron" not in rt.unsupported_strategies()[0]  # the plugin runs megatron: no refusal
    assert rt.before_model_build("fsdp") == ["ascend"] and "mindspeed.megatron_adaptor" not in sys.modules
    rt.before_model_build("megatron")
    assert sys.modules["mindspeed.megatron_adaptor"].BEFORE == []


def test_megatron_without_mindspeed_names_the_install(
    monkeypatch: pytest.MonkeyPatch, clean_modules: None
) -> None:
    monkeypatch.setitem(sys.modules, "mindspeed", None)
    rt = hook_runtime({"ascend": AscendPlugin()}, NPU)
    with pytest.raises(RlportError) as err:
        rt.before_model_build("megatron")
    assert "mindspeed.megatron_adaptor" in err.value.message
    assert err.value.fix.startswith("pip install mindspeed")


def test_megatron_imported_too_early_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None
) -> None:
    _mindspeed(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "megatron.core", ModuleType("megatron.core"))
    rt = hook_runtime({"ascend": AscendPlugin()}, NPU)
    with pytest.raises(
        RlportError, match=re.escape("megatron.core was imported before mindspeed.megatron_adaptor")
    ):
        rt.before_model_build("megatron")
