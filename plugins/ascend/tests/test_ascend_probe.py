"""The probe decides from the file system and the loader alone, on machines described by tests:
a temporary root with /dev and /usr/local/Ascend, an injected library loader and PATH lookup."""

from __future__ import annotations

import ctypes.util
import shutil
import sys
from pathlib import Path

import pytest

from rlport_ascend.probe import AUTOLOAD, Machine, detect


def _loader(loadable: set[str]):
    calls: list[str] = []

    def load(name: str) -> object:
        calls.append(name)
        if Path(name).name not in loadable:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return object()

    load.calls = calls  # type: ignore[attr-defined]
    return load


def _machine(tmp_path: Path, *, npu: bool, toolkit: bool, libs: set[str], devices=(), env=None, smi=None):
    for n in devices:
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / "dev" / f"davinci{n}").touch()
    if devices:
        (tmp_path / "dev" / "davinci_manager").touch()
    if toolkit:
        (tmp_path / "usr/local/Ascend/ascend-toolkit/latest/lib64").mkdir(parents=True)
    return Machine(
        env=env or {},
        root=tmp_path,
        load=_loader(libs),
        which=lambda name: smi if name == "npu-smi" else None,
        torch_npu_installed=npu,
    )


BOTH = {"libascendcl.so", "libhccl.so"}


def test_no_torch_npu_is_a_plain_unavailable_without_env_or_findings(tmp_path: Path) -> None:
    result = detect(_machine(tmp_path, npu=False, toolkit=False, libs=set())).result()
    assert not result.available and result.reason == "torch-npu is not installed"
    assert result.env == {} and result.findings == ()


def test_devices_without_torch_npu_name_the_extra(tmp_path: Path) -> None:
    result = detect(_machine(tmp_path, npu=False, toolkit=True, libs=BOTH, devices=(0, 1))).result()
    assert not result.available and "pip install 'rlport-ascend[npu]'" in result.reason
    assert "davinci0,davinci1" in result.reason


def test_torch_npu_without_cann_disables_autoload_and_reports_broken_import(tmp_path: Path) -> None:
    result = detect(_machine(tmp_path, npu=True, toolkit=False, libs=set())).result()
    assert not result.available
    assert "no CANN toolkit" in result.reason and "ASCEND_HOME_PATH" in result.reason
    assert result.env == {AUTOLOAD: "0"}
    (finding,) = result.findings
    assert "`import torch` fails in every program" in finding.problem
    assert "set_env.sh" in finding.fix and "pip uninstall torch-npu" in finding.fix


def test_toolkit_not_on_the_loader_path_is_named_with_its_set_env(tmp_path: Path) -> None:
    machine = _machine(tmp_path, npu=True, toolkit=True, libs={"libhccl.so"}, devices=(0,))
    result = detect(machine).result()
    assert not result.available and result.env == {AUTOLOAD: "0"}
    assert "libascendcl.so" in result.reason and "libhccl.so:" not in result.reason
    (finding,) = result.findings
    assert f"source {tmp_path}/usr/local/Ascend/ascend-toolkit/set_env.sh" in finding.fix


def test_ascend_home_path_wins_and_libraries_load_from_ld_library_path(tmp_path: Path) -> None:
    lib = tmp_path / "cann/lib64"
    lib.mkdir(parents=True)
    for name in BOTH:
        (lib / name).touch()
    env = {"ASCEND_HOME_PATH": "/cann", "LD_LIBRARY_PATH": f"/nowhere:{lib}"}
    machine = _machine(
        tmp_path, npu=True, toolkit=False, libs=BOTH, devices=(0, 12), env=env, smi="/usr/bin/npu-smi"
    )
    detection = detect(machine)
    assert detection.toolkit == tmp_path / "cann"
    assert machine.load.calls == [str(lib / "libascendcl.so"), str(lib / "libhccl.so")]  # type: ignore[attr-defined]
    result = detection.result()
    assert result.available and result.env == {} and result.findings == ()
    assert "davinci0,davinci12" in result.reason and "npu-smi at /usr/bin/npu-smi" in result.reason


def test_newest_cann_folder_is_found_without_variables(tmp_path: Path) -> None:
    for version in ("8.2.RC1", "8.10.0", "8.3.0"):
        (tmp_path / f"usr/local/Ascend/cann-{version}").mkdir(parents=True)
    detection = detect(_machine(tmp_path, npu=True, toolkit=False, libs=BOTH, devices=(0,)))
    assert detection.toolkit is not None and detection.toolkit.name == "cann-8.10.0"


def test_cann_without_devices_is_unavailable_without_findings(tmp_path: Path) -> None:
    result = detect(_machine(tmp_path, npu=True, toolkit=True, libs=BOTH)).result()
    assert not result.available and "no NPU device" in result.reason
    assert result.env == {} and result.findings == ()


@pytest.mark.skipif(sys.platform != "linux", reason="loads a real shared library through the dynamic linker")
def test_a_real_shared_library_loads_through_ctypes(tmp_path: Path) -> None:
    """The default loader is ctypes.CDLL: a real library renamed into LD_LIBRARY_PATH loads; a missing
    one raises OSError and becomes the reason."""
    real = ctypes.util.find_library("z") or ctypes.util.find_library("m")
    if real is None:
        pytest.skip("no libz/libm to stand in for the CANN libraries")
    import ctypes as _ctypes

    source = next(
        p
        for p in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")
        if (Path(p) / real).exists()
    )
    lib = tmp_path / "lib64"
    lib.mkdir()
    shutil.copy(Path(source) / real, lib / "libascendcl.so")
    (tmp_path / "usr/local/Ascend/ascend-toolkit/latest").mkdir(parents=True)
    machine = Machine(
        env={"LD_LIBRARY_PATH": str(lib)},
        root=tmp_path,
        load=_ctypes.CDLL,
        which=lambda _: None,
        torch_npu_installed=True,
    )
    detection = detect(machine)
    assert len(detection.library_errors) == 1 and detection.library_errors[0].startswith("libhccl.so:")
