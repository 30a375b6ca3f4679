"""The installed plugin (``pip install -e plugins/efa``) inside rlport's runtime and CLI, on a fake tree.

With the built-in cpu plugin (gloo) it is left out with the reason; with a fixture device plugin
whose backend is nccl it is active and its environment and doctor findings reach the core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from efa_fakes import PROVES_EFA, SOCKET_FALLBACK, clean_env, efa_machine  # noqa: F401 (autouse fixture)

from rlport import bootstrap
from rlport.errors import RlportError, SelectionError
from rlport.testing import make_plugin
from rlport.types import DeviceInfo

LEFT_OUT = "tunes nccl; the active device plugin 'cpu' uses gloo"

# A device plugin whose module is the plugin object (make_plugin(attr="")), with backend nccl.
NCCL_DEVICE = """
import rlport
from rlport.types import DeviceInfo, Manifest, ProbeResult

rlport_manifest = Manifest(name="ncclchip", kind="device", hook_api=">=1.0,<2")


@rlport.hookimpl
def rlport_probe():
    return ProbeResult(available=True, reason="fixture nccl device", priority=150)


@rlport.hookimpl
def rlport_device_info():
    return DeviceInfo(device_type="cpu", count=1, names=("ncclchip",), collectives_backend="nccl")
"""


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # only the plugins under test: fixture device plugins other suites left installed must not take part
    monkeypatch.setenv("RLPORT_PLUGINS", "efa,ncclchip")
    root = efa_machine(tmp_path / "root")
    monkeypatch.setenv("RLPORT_EFA_ROOT", str(root))
    monkeypatch.setattr(
        "rlport_efa.netif.system_addresses", lambda: lambda name: {"ens32": ["10.0.0.5"]}.get(name, [])
    )
    return root


@pytest.fixture
def nccl_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    make_plugin(site, "ncclchip", NCCL_DEVICE, attr="")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("rlport_ncclchip", None)


def test_left_out_with_cpu_active(machine: Path) -> None:
    rt = bootstrap.init()
    efa = next(r for r in rt.records if r.name == "efa")
    assert rt.device_plugin == "cpu" and rt.fabric_plugins == []
    assert (efa.status, efa.reason) == ("unavailable", LEFT_OUT)
    assert rt.collectives_env() == {}


def test_explicit_with_cpu_is_a_loud_error(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLPORT_FABRICS", "efa")
    with pytest.raises(SelectionError) as info:
        bootstrap.init()
    assert info.value.message == f"RLPORT_FABRICS=efa names 'efa', which {LEFT_OUT}"


def test_active_with_an_nccl_device(machine: Path, nccl_device: Path) -> None:
    rt = bootstrap.init()
    assert (rt.device_plugin, rt.fabric_plugins) == ("ncclchip", ["efa"])
    env = rt.collectives_env()
    assert {
        k: env[k] for k in ("LD_LIBRARY_PATH", "NCCL_NET_PLUGIN", "NCCL_SOCKET_IFNAME", "NCCL_DEBUG")
    } == {
        "LD_LIBRARY_PATH": "/opt/amazon/ofi-nccl/lib",
        "NCCL_NET_PLUGIN": "ofi",
        "NCCL_SOCKET_IFNAME": "=ens32",
        "NCCL_DEBUG": "INFO",
    }
    assert not {"FI_PROVIDER", "NCCL_PROTO", "FI_EFA_USE_DEVICE_RDMA"} & set(env)  # 1.14.2 needs none


def test_doctor_findings_reach_rlport_doctor(
    machine: Path, nccl_device: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlport.doctor import diagnose

    monkeypatch.setenv("NCCL_PROTO", "simple")
    problems = [f for f in diagnose() if f.check == "efa"]
    assert [f.problem.split("=")[0] for f in problems] == ["NCCL_PROTO"] and problems[
        0
    ].fix == "unset NCCL_PROTO"


def test_preflight_hook_judges_the_captured_log(
    machine: Path, nccl_device: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rt = bootstrap.init()
    for key, value in rt.collectives_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NCCL_DEBUG_FILE", f"{tmp_path}/nccl.%h.%p.log")
    log_file = tmp_path / f"nccl.host.{os.getpid()}.log"
    calls: list[object] = []
    logs = [PROVES_EFA, SOCKET_FALLBACK]

    def fake_all_reduce(group: object) -> None:  # stands in for NCCL: writes its log, as NCCL would
        calls.append(group)
        log_file.write_text(logs[len(calls) - 1])

    monkeypatch.setattr("rlport_efa.preflight.all_reduce", fake_all_reduce)
    for ok in (True, False):
        [result] = rt.pm.get_plugin("efa").rlport_collectives_preflight(backend="nccl", group="G")
        assert result.ok is ok, result.detail
    assert calls == ["G", "G"]
    assert rt.pm.get_plugin("efa").rlport_collectives_preflight(backend="gloo", group=None) is None
    assert rt.pm.get_plugin("efa").rlport_doctor(device=DeviceInfo("cpu", 1)) == []


def rlport_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RLPORT_", "NCCL_"))}
    return subprocess.run(
        [sys.executable, "-m", "rlport", *args], capture_output=True, text=True, env={**base, **env}
    )


def test_cli_lists_it_unavailable_with_cpu(machine: Path) -> None:
    listing = rlport_cli("plugins", "--json", RLPORT_EFA_ROOT=str(machine))
    assert listing.returncode == 0, listing.stderr
    efa = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}["efa"]
    assert (efa["kind"], efa["status"], efa["reason"]) == ("fabric", "unavailable", LEFT_OUT)
    doctor = rlport_cli("doctor", RLPORT_EFA_ROOT=str(machine))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    failed = rlport_cli("info", RLPORT_EFA_ROOT=str(machine), RLPORT_FABRICS="efa")
    assert failed.returncode == 2 and "tunes nccl" in failed.stderr


def test_core_conflict_error_on_a_foreign_net_plugin(
    machine: Path, nccl_device: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlport.collectives import init_process_group

    bootstrap.init()
    monkeypatch.setenv("NCCL_NET_PLUGIN", "spcx")
    with pytest.raises(RlportError) as info:
        init_process_group(0, 1, init_method="file:///nonexistent")
    assert "NCCL_NET_PLUGIN='spcx'" in info.value.message and "'ofi'" in info.value.message
