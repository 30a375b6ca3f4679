"""The plugin's hooks other than probe, attention and patches: device info through the fake
``torch.npu``, allocator settings per phase, vLLM engine arguments and platform check, doctor findings,
and what the probe does to this process when torch_npu is installed without CANN."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from ascend_fakes import fake_npu_fixture  # noqa: F401  (the fixture "fake_npu")

from rlport.errors import ConfigError, EngineError
from rlport.types import DeviceInfo
from rlport_ascend import allocator, checks, engine, stack
from rlport_ascend.device import device_info

NPU = DeviceInfo(device_type="npu", count=2, device_module="torch.npu", collectives_backend="hccl")


def test_importing_the_entry_point_imports_neither_torch_nor_torch_npu() -> None:
    code = "import sys, rlport_ascend; print(sorted(m for m in ('torch', 'torch_npu') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_device_info_through_torch_npu(fake_npu: ModuleType) -> None:
    fake_npu.npu.STATE.update(count=3, names=["Ascend910B2", "Ascend910B2", "Ascend910B3"])
    info = device_info()
    assert info.device_type == "npu" and info.device_module == "torch.npu" and info.count == 3
    assert info.names == ("Ascend910B2", "Ascend910B2", "Ascend910B3")
    assert info.visible_devices_env == "ASCEND_RT_VISIBLE_DEVICES" and info.ray_resource == "NPU"
    assert info.collectives_backend == "hccl"
    assert info.runtime_version == "torch_npu 2.13.0+fake"
    assert info.extra["memory_gib"] == "64.0,64.0,64.0"


@pytest.mark.parametrize(
    ("phase", "env", "vllm_ascend", "expected"),
    [
        ("training", {}, False, {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"}),
        ("training", {}, True, {}),  # a sleep-mode engine may share the process
        (
            "training",
            {"EXPANDABLE_SEGMENTS": "True"},
            True,
            {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"},
        ),
        (
            "training",
            {"EXPANDABLE_SEGMENTS": "false"},
            False,
            {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:False"},
        ),
        ("rollout", {}, False, {}),
        ("rollout", {"EXPANDABLE_SEGMENTS": "True"}, True, {}),
    ],
)
def test_allocator_settings_per_phase(phase, env, vllm_ascend, expected) -> None:
    assert allocator.settings(phase, env, vllm_ascend=vllm_ascend).env == expected


def test_a_bad_switch_names_the_value() -> None:
    with pytest.raises(ConfigError, match="EXPANDABLE_SEGMENTS='maybe'"):
        allocator.settings("training", {"EXPANDABLE_SEGMENTS": "maybe"}, vllm_ascend=False)
    (finding,) = checks.env_findings({"EXPANDABLE_SEGMENTS": "maybe"})
    assert "export EXPANDABLE_SEGMENTS=True" in finding.fix


def _platform(device_type: str, name: str = "NPUPlatform"):
    return lambda: (device_type, name)


def test_engine_args_check_that_vllm_runs_on_the_npu() -> None:
    with pytest.raises(EngineError, match="CpuPlatform") as err:
        engine.engine_args("vllm", {}, NPU, resolve=_platform("cpu", "CpuPlatform"))
    assert "pip install vllm-ascend" in err.value.fix
    assert engine.engine_args("vllm", {}, NPU, resolve=_platform("npu")) is None
    assert engine.engine_args("hf", {}, NPU, resolve=_platform("cpu")) is None  # not a vLLM engine


def test_sleep_mode_refuses_expandable_segments_and_a_missing_extension() -> None:
    args = {"enable_sleep_mode": True}
    on = {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"}
    with pytest.raises(EngineError, match="expandable_segments") as err:
        engine.engine_args("vllm", args, NPU, env=on, resolve=_platform("npu"), has_module=lambda _: True)
    assert "expandable_segments:False" in err.value.fix
    with pytest.raises(EngineError, match="vllm_ascend_C"):
        engine.engine_args("vllm", args, NPU, env={}, resolve=_platform("npu"), has_module=lambda _: False)
    assert (
        engine.engine_args("vllm", args, NPU, env={}, resolve=_platform("npu"), has_module=lambda _: True)
        is None
    )


def test_doctor_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    (noset,) = checks.env_findings({"RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES": "1"})
    assert "npu:0" in noset.problem and noset.fix == "unset RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"
    monkeypatch.setattr(allocator, "vllm_ascend_installed", lambda: True)
    (sleep,) = checks.env_findings(
        {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True,max_split_size_mb:64"}
    )
    assert "sleep" in sleep.problem and "export PYTORCH_NPU_ALLOC_CONF=max_split_size_mb:64" in sleep.fix
    assert (
        checks.env_findings(
            {"PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"}, ["PYTORCH_NPU_ALLOC_CONF"]
        )
        == []
    )


def test_torch_npu_must_be_built_for_the_installed_torch() -> None:
    assert stack.pairing_problem("2.13.0+cpu", "2.13.0") is None
    assert stack.pairing_problem("2.13.0", "2.13.0.post1") is None
    finding = stack.pairing_problem("2.13.0+cpu", "2.7.1")
    assert finding is not None and "torch-npu 2.7.1 is built for torch 2.7.1" in finding.problem
    assert "pip install 'torch==2.7.1'" in finding.fix


def test_vllm_platform_finding_only_when_they_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: object())
    assert engine.doctor(NPU, resolve=_platform("npu")) == []
    (finding,) = engine.doctor(NPU, resolve=_platform("cuda", "CudaPlatform"))
    assert "CudaPlatform" in finding.problem

    def broken():
        raise RuntimeError("no platform")

    (finding,) = engine.doctor(NPU, resolve=broken)
    assert "RuntimeError: no platform" in finding.problem


BROKEN_TORCH_NPU = """
raise ImportError("libhccl.so: cannot open shared object file: No such file or directory")
"""


def _broken_torch_npu(tmp_path: Path) -> Path:
    """A torch_npu that fails to import as the real one does without CANN (no entry point)."""
    (tmp_path / "torch_npu").mkdir()
    (tmp_path / "torch_npu" / "__init__.py").write_text(BROKEN_TORCH_NPU)
    return tmp_path


@pytest.mark.parametrize("probe_first", [True, False])
def test_probe_keeps_transformers_from_importing_a_torch_npu_that_cannot_load(
    tmp_path: Path, probe_first: bool
) -> None:
    """transformers imports torch_npu whenever it is installed; after the probe (no CANN here) it does
    not, and a transformers model module loads. Without the probe the same import fails."""
    code = textwrap.dedent(f"""
        import rlport_ascend
        if {probe_first}:
            result = rlport_ascend.plugin.rlport_probe()
            assert not result.available and result.env == {{"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}}, result
        import transformers.models.qwen2.modeling_qwen2
        print("loaded")
    """)
    env = {"PYTHONPATH": str(_broken_torch_npu(tmp_path)), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if probe_first:
        assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr[-2000:]
    else:
        assert out.returncode != 0 and "libhccl.so" in out.stderr
