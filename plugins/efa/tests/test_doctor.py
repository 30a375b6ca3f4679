"""Doctor findings on a fake tree: NCCL wheel shadowing, foreign net plugins, obsolete variables."""

from __future__ import annotations

from pathlib import Path

from efa_fakes import clean_env, efa_machine, write  # noqa: F401 (autouse fixture)
from rlport_efa.detect import detect
from rlport_efa.doctor import exported_variables, findings, shadowing
from rlport_efa.host import Host


def found(root: Path, **kwargs):  # type: ignore[no-untyped-def]
    return detect(Host(efa_machine(root, **kwargs), {}))


def test_pip_nccl_wheel_shadowing_the_system_nccl(tmp_path: Path) -> None:
    write(tmp_path / "usr/lib/x86_64-linux-gnu/libnccl.so.2.21.5", b"\x7fELF")
    host = Host(tmp_path, {})
    wheels = {"nvidia-nccl-cu12": "2.27.3"}
    [finding] = shadowing(host, wheels.get)
    assert finding.problem.startswith("pip's nvidia-nccl-cu12 2.27.3 shadows the system NCCL 2.21.5")
    assert (
        finding.fix
        == "pip install 'nvidia-nccl-cu12==2.21.5'   (or export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libnccl.so.2.21.5)"
    )
    assert shadowing(host, {"nvidia-nccl-cu12": "2.21.5"}.get) == []  # the same NCCL
    assert shadowing(Host(tmp_path / "empty", {}), wheels.get) == []  # no system NCCL: nothing to shadow


def test_clean_environment_has_no_findings(tmp_path: Path) -> None:
    assert exported_variables(found(tmp_path), {}, ()) == []


def test_obsolete_and_harmful_variables(tmp_path: Path) -> None:
    env = {
        "FI_EFA_USE_DEVICE_RDMA": "1",
        "FI_EFA_FORK_SAFE": "1",
        "RDMAV_FORK_SAFE": "1",
        "NCCL_PROTO": "simple",
        "FI_PROVIDER": "efa",
        "NCCL_BUFFSIZE": "8388608",
        "NCCL_NET_PLUGIN": "spcx",
        "NCCL_NET": "Socket",
        "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
        "FI_EFA_SET_CUDA_SYNC_MEMOPS": "0",  # the fake machine's installer is 1.40.0
    }
    got = {f.problem.split("=")[0]: f for f in exported_variables(found(tmp_path), env, ())}
    assert set(got) == set(env)
    assert "not needed with libfabric>=1.18 and aws-ofi-nccl>=1.7" in got["FI_EFA_USE_DEVICE_RDMA"].problem
    assert "must never be set" in got["RDMAV_FORK_SAFE"].problem
    assert "before 1.29 (this one: 1.40.0)" in got["FI_EFA_SET_CUDA_SYNC_MEMOPS"].problem
    assert "only for aws-ofi-nccl<=1.5.0; slows aws-ofi-nccl 1.14.2" in got["NCCL_PROTO"].problem
    assert got["NCCL_NET_PLUGIN"].fix == "export NCCL_NET_PLUGIN=ofi   (or unset it)"
    assert got["LD_LIBRARY_PATH"].fix == "export LD_LIBRARY_PATH=/opt/amazon/ofi-nccl/lib:$LD_LIBRARY_PATH"
    assert all(
        f.fix == f"unset {k}" for k, f in got.items() if k not in ("NCCL_NET_PLUGIN", "LD_LIBRARY_PATH")
    )


def test_what_an_old_plugin_needs_is_not_flagged(tmp_path: Path) -> None:
    env = {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple", "FI_EFA_USE_DEVICE_RDMA": "1"}
    assert exported_variables(found(tmp_path, plugin_version="1.5.0", instance="p4d.24xlarge"), env, ()) == []


def test_rdma_switch_on_an_instance_without_rdma(tmp_path: Path) -> None:
    [finding] = exported_variables(
        found(tmp_path, plugin_version="1.6.0", instance="g5.48xlarge"), {"FI_EFA_USE_DEVICE_RDMA": "1"}, ()
    )
    assert "this instance has no GPUDirect RDMA" in finding.problem


def test_variables_rlport_exported_are_not_the_users(tmp_path: Path) -> None:
    machine = found(tmp_path)
    assert exported_variables(machine, {"NCCL_NET_PLUGIN": "spcx"}, {"NCCL_NET_PLUGIN"}) == []
    assert exported_variables(machine, {"NCCL_NET_PLUGIN": "ofi", "NCCL_NET": "Libfabric"}, ()) == []


def test_findings_reads_the_host_environment(tmp_path: Path) -> None:
    host = Host(efa_machine(tmp_path), {"RDMAV_HUGEPAGES_SAFE": "1"})
    assert [f.problem.split("=")[0] for f in findings(host, detect(host), ())] == ["RDMAV_HUGEPAGES_SAFE"]
