"""The shared device-module helpers (``rlport.devices``), against fake torch builds, a fake device
module and plain environment mappings: no accelerator is needed or used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from rlport.devices import allocator, module_info, torch_build, visible
from rlport.errors import ConfigError
from rlport.types import DeviceInfo

CUDA_VERSION_PY = """\
from typing import Optional

__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'rocm', 'xpu']
__version__ = '2.13.0+cu128'
debug = False
cuda: Optional[str] = '12.8'
git_version = 'abc'
hip: Optional[str] = None
rocm: Optional[str] = None
xpu: Optional[str] = None
"""


def test_version_file_of_each_build_kind_is_read_literally() -> None:
    cuda = torch_build.parse_version_file(CUDA_VERSION_PY)
    assert cuda.version == "2.13.0+cu128" and cuda.runtimes == {"cuda": "12.8"}
    assert cuda.runtime("cuda") == "12.8" and cuda.runtime("hip") is None and not cuda.host_only
    assert cuda.describe() == "torch 2.13.0+cu128 is built for cuda 12.8"
    hip = torch_build.parse_version_file(
        CUDA_VERSION_PY.replace("'12.8'", "None")
        .replace("+cu128", "+rocm6.4")
        .replace("hip: Optional[str] = None", "hip: Optional[str] = '6.4.43482'")
    )
    assert hip.runtimes == {"hip": "6.4.43482"} and hip.runtime("cuda") is None
    cpu = torch_build.parse_version_file(CUDA_VERSION_PY.replace("'12.8'", "None").replace("+cu128", "+cpu"))
    assert cpu.host_only and cpu.describe() == "torch 2.13.0+cpu is a CPU build"


def test_the_installed_torch_is_read_and_not_imported() -> None:
    code = "import sys, rlport.devices.torch_build as t; b = t.installed(); print(b.version, b.host_only, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    import torch

    assert out == [torch.__version__, str(torch.version.cuda is None and torch.version.hip is None), "False"]


def test_a_torch_that_would_fail_to_import_is_still_read(tmp_path: Path) -> None:
    """A fake torch package whose ``__init__`` raises: reading its build must not execute it."""
    pkg = tmp_path / "torch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('executed')\n")
    (pkg / "version.py").write_text(CUDA_VERSION_PY)
    code = "import json, rlport.devices.torch_build as t; b = t.installed(); print(json.dumps([b.version, b.runtimes]))"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(result.stdout) == ["2.13.0+cu128", {"cuda": "12.8"}]


def test_visible_values_parse_count_and_disagree() -> None:
    assert visible.parse(None) is None and visible.parse("") == () and visible.parse(" 0, 2 ") == ("0", "2")
    assert visible.visible_count(4, None) == 4 and visible.visible_count(4, ()) == 0
    assert visible.visible_count(4, ("1", "3")) == 2
    assert visible.visible_count(2, ("0", "5", "1")) == 1  # the list stops at the first bad index
    assert visible.visible_count(2, ("GPU-8f2e", "GPU-11aa")) == 2
    env = {"A": "0,1", "B": "0, 1", "C": "1"}
    found = visible.disagreements(["A", "B", "C", "D"], env)
    assert [(d.first, d.second) for d in found] == [("A", "C"), ("B", "C")]
    assert visible.ray_noset_variable("X_VISIBLE") == "RAY_EXPERIMENTAL_NOSET_X_VISIBLE"


def test_device_info_from_a_fake_device_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    fake = types.ModuleType("fake_accel")
    fake.device_count = lambda: 2

    def props(i: int) -> types.SimpleNamespace:
        calls.append(("props", i))
        return types.SimpleNamespace(name=f"Accel {i}", total_memory=(i + 1) * 2**30, major=9, minor=0)

    fake.get_device_properties = props
    fake.get_device_name = lambda i: pytest.fail("the name comes from the properties")
    monkeypatch.setitem(sys.modules, "fake_accel", fake)
    info = module_info.describe_module(
        "fake_accel",
        "accel",
        visible_devices_env="ACCEL_VISIBLE",
        ray_resource="ACCEL",
        collectives_backend="accl",
        architecture=lambda p: f"v{p.major}{p.minor}",
        driver_version="550.1",
        conflicting_env=("OTHER_VISIBLE",),
        extra={"note": "x"},
    )
    assert calls == [("props", 0), ("props", 1)]
    assert info.count == 2 and info.names == ("Accel 0", "Accel 1") and info.device_module == "fake_accel"
    assert info.extra == {"arch": "v90", "memory_gib": "1.0,2.0", "note": "x"}
    assert (info.visible_devices_env, info.ray_resource, info.collectives_backend) == (
        "ACCEL_VISIBLE",
        "ACCEL",
        "accl",
    )
    assert info.driver_version == "550.1" and info.conflicting_env == ("OTHER_VISIBLE",)


def test_allocator_phases_and_the_sleep_mode_conflict() -> None:
    training = allocator.phase_settings("training", "X_ALLOC_CONF", sleep_mode=False)
    assert training.env == {"X_ALLOC_CONF": "expandable_segments:True"}
    assert allocator.phase_settings("training", "X_ALLOC_CONF", sleep_mode=True).env == {}
    assert allocator.phase_settings("rollout", "X_ALLOC_CONF", sleep_mode=False).env == {}
    with pytest.raises(ConfigError, match="'inference'"):
        allocator.phase_settings("inference", "X_ALLOC_CONF", sleep_mode=False)
    assert allocator.parse_conf("expandable_segments:True, max_split_size_mb:512") == {
        "expandable_segments": "True",
        "max_split_size_mb": "512",
    }
    user = {"X_ALLOC_CONF": "max_split_size_mb:512,expandable_segments:True"}
    finding = allocator.sleep_conflict("X_ALLOC_CONF", "mychip", env=user)
    assert (
        finding is not None
        and finding.check == "mychip"
        and "'max_split_size_mb:512,expandable_segments:True'" in finding.problem
    )
    assert finding.fix.startswith("export X_ALLOC_CONF=max_split_size_mb:512 ")
    alone = allocator.sleep_conflict("X_ALLOC_CONF", "c", env={"X_ALLOC_CONF": "expandable_segments:True"})
    assert alone is not None and alone.fix.startswith("unset X_ALLOC_CONF")
    assert allocator.sleep_conflict("X_ALLOC_CONF", "c", env=user, exported={"X_ALLOC_CONF"}) is None
    assert (
        allocator.sleep_conflict("X_ALLOC_CONF", "c", env={"X_ALLOC_CONF": "expandable_segments:False"})
        is None
    )
    assert allocator.sleep_conflict("X_ALLOC_CONF", "c", env={}) is None


def test_importing_the_helpers_imports_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        import rlport.devices.allocator, rlport.devices.module_info, rlport.devices.torch_build, rlport.devices.visible
        print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_collectives_log_names_transports_and_networks(tmp_path: Path) -> None:
    from rlport.devices import collective_log

    text = (
        "h:1:1 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0>\n"
        "h:1:1 [0] NCCL INFO Using network Socket\n"
        "h:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via SHM/direct/direct\n"
        "h:1:1 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via SHM/direct/direct\n"
        "h:1:1 [0] NCCL INFO Channel 00/0 : 1[1] -> 0[0] [receive] via NET/Socket/0\n"
    )
    assert collective_log.transports(text) == (["SHM/direct/direct", "NET/Socket/0"], ["Socket"])
    env = collective_log.debug_env("XCCL", env={}, folder=str(tmp_path))
    assert env == {
        "XCCL_DEBUG": "INFO",
        "XCCL_DEBUG_SUBSYS": "INIT,NET",
        "XCCL_DEBUG_FILE": f"{tmp_path}/rlport-xccl.%h.%p.log",
    }
    assert collective_log.debug_env("XCCL", env={"XCCL_DEBUG_FILE": "/x"}) == {}
    log = collective_log.log_path("XCCL", env=env, pid=42)
    assert log is not None and log.name.endswith(".42.log") and "%h" not in log.name
    assert collective_log.describe("XCCL", env=env, pid=42) == f"transport not logged (no {log})"
    log.write_text(text)
    assert (
        collective_log.describe("XCCL", env=env, pid=42)
        == "via SHM/direct/direct, NET/Socket/0; network Socket"
    )
    assert collective_log.describe("XCCL", env={}).startswith(
        "transport not logged (XCCL_DEBUG is configured"
    )


def test_vllm_arguments_keep_valid_config_values_and_name_bad_ones() -> None:
    from rlport.devices.engine_args import vllm_args
    from rlport.errors import EngineError

    assert vllm_args({}, sleep_levels=(1, 2), platform="X") == {
        "gpu_memory_utilization": 0.5,
        "enable_sleep_mode": True,
    }
    assert (
        vllm_args({"gpu_memory_utilization": 0.9, "enable_sleep_mode": True}, sleep_levels=(1,), platform="X")
        == {}
    )
    assert vllm_args({}, sleep_levels=(), platform="X") == {
        "gpu_memory_utilization": 0.5,
        "enable_sleep_mode": False,
    }
    # A level that does not exist matters only when sleep mode is on.
    assert vllm_args({"sleep_level": 2, "enable_sleep_mode": False}, sleep_levels=(1,), platform="X") == {
        "gpu_memory_utilization": 0.5
    }
    for bad in (0, True, "0.5", 1.01):
        with pytest.raises(EngineError, match=f"gpu_memory_utilization={bad!r} must be a fraction"):
            vllm_args({"gpu_memory_utilization": bad}, sleep_levels=(1,), platform="X")
    with pytest.raises(
        EngineError, match=r"sleep_level=2 is not a sleep level of vLLM on X \(levels: 1\)"
    ) as info:
        vllm_args({"sleep_level": 2}, sleep_levels=(1,), platform="X")
    assert info.value.fix == "set rollout.options.sleep_level=1"


def test_an_optional_vendor_library_that_is_missing_or_broken_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlport.devices import optional

    assert optional.load("no_such_vendor_lib", "pip install x") == (
        None,
        "no_such_vendor_lib is not installed (pip install x)",
    )
    (tmp_path / "broken_vendor_lib.py").write_text(
        "raise OSError('libvendor.so: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module, why = optional.load("broken_vendor_lib", "pip install x")
    assert (
        module is None
        and why == "broken_vendor_lib failed to import: OSError: libvendor.so: cannot open shared object file"
    )


def test_the_base_plugin_reports_a_user_value_of_a_collectives_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlport.devices.module_plugin import DeviceModulePlugin

    class Chip(DeviceModulePlugin):
        check, alloc_conf_variable, collectives_backend = "chip", "CHIP_ALLOC_CONF", "cccl"
        collectives_prefix, collectives_env_vars = "CCCL", {"CCCL_MODE": "safe"}

    monkeypatch.setattr(allocator, "sleep_engine_installed", lambda: True)
    env = {"CCCL_MODE": "fast", "CHIP_ALLOC_CONF": "expandable_segments:true"}
    findings = Chip().common_findings(env)
    assert [f.check for f in findings] == ["chip", "chip"]
    assert findings[1].problem == "CCCL_MODE='fast' is set; cccl weight sync with vLLM needs 'safe'"
    assert Chip().rlport_worker_env(None) == {"CCCL_MODE": "safe"}  # type: ignore[arg-type]
    assert Chip().collectives_version().startswith("unknown (")  # no device module named


def test_offload_during_rollout_is_the_device_plugins_default() -> None:
    """Actor offload was switched on for every non-cpu device type, with no way for a plugin to
    decline; now ``DeviceInfo.offload_by_default`` decides when ``actor.offload`` is unset."""
    from rlport.train.config.derive import derive_for_device, offload_of
    from rlport.train.config.schema import TrainConfig

    def offloads(setting: bool | None, device: DeviceInfo, *, sharded: bool) -> bool:
        cfg = TrainConfig()
        cfg.actor.offload = setting
        cfg.actor.strategy = "fsdp" if sharded else "replicated"
        return offload_of(cfg, device)

    host = DeviceInfo(device_type="cpu", count=1)
    declines = DeviceInfo(device_type="simdev", count=2)  # a device plugin that did not ask
    asks = DeviceInfo(device_type="simdev", count=2, offload_by_default=True)
    assert not offloads(None, host, sharded=False) and not offloads(None, declines, sharded=False)
    assert offloads(None, asks, sharded=False) and not offloads(None, asks, sharded=True)
    assert offloads(True, declines, sharded=False) and not offloads(False, asks, sharded=False)
    # derived once, after the device is chosen: every component then reads a concrete value
    cfg = TrainConfig()
    derive_for_device(cfg, asks)
    assert cfg.actor.offload is True
    derive_for_device(cfg, declines)  # idempotent: the derived value is now the setting
    assert cfg.actor.offload is True


def test_a_torch_device_module_offloads_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """describe_module (the CUDA, ROCm and Ascend plugins' device info) keeps offload on, the
    actor and the engine sharing one device's memory, and Hub kernels off."""
    fake = types.ModuleType("fake_accel")
    fake.device_count = lambda: 0
    monkeypatch.setitem(sys.modules, "fake_accel", fake)
    args = {"visible_devices_env": None, "ray_resource": None, "collectives_backend": "gloo"}
    info = module_info.describe_module("fake_accel", "fake", **args)
    assert info.offload_by_default and not info.hub_kernels
    assert not module_info.describe_module(
        "fake_accel", "fake", offload_by_default=False, **args
    ).offload_by_default
