"""The environment per aws-ofi-nccl / libfabric version (doc/efa-env-var.md), on a fake tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from efa_fakes import clean_env, efa_machine  # noqa: F401 (autouse fixture)
from packaging.version import Version
from rlport_efa.detect import detect
from rlport_efa.envplan import collectives_env, rdma_instance, version_env
from rlport_efa.host import Host


@pytest.mark.parametrize(
    ("plugin", "libfabric", "instance", "expected"),
    [
        (
            "1.5.0",
            "1.16.0",
            "p4d.24xlarge",
            {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple", "FI_EFA_USE_DEVICE_RDMA": "1"},
        ),
        ("1.5.0", "1.16.0", "g5.48xlarge", {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple"}),
        ("1.6.0", "1.18.0", "p5.48xlarge", {"FI_EFA_USE_DEVICE_RDMA": "1"}),
        ("1.6.0", "1.18.0", "g5.48xlarge", {}),
        ("1.7.0", "1.17.1", "p4de.24xlarge", {"FI_EFA_USE_DEVICE_RDMA": "1"}),
        ("1.7.0", "1.18.0", "p4d.24xlarge", {}),
        ("1.14.2", "1.22.0", "p5en.48xlarge", {}),
        (None, None, "p5.48xlarge", {}),  # unknown versions count as current
    ],
)
def test_version_env(
    plugin: str | None, libfabric: str | None, instance: str, expected: dict[str, str]
) -> None:
    to_version = lambda v: Version(v) if v else None  # noqa: E731
    assert version_env(to_version(plugin), to_version(libfabric), instance) == expected


def test_rdma_instances() -> None:
    assert [
        rdma_instance(t)
        for t in ("p4d.24xlarge", "p5.48xlarge", "p6-b200.48xlarge", "g5.48xlarge", "trn1.32xlarge", "")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_collectives_env_current_plugin(tmp_path: Path) -> None:
    found = detect(Host(efa_machine(tmp_path), {}))
    env = collectives_env(found, {}, "=ens32")
    assert env == {
        "LD_LIBRARY_PATH": "/opt/amazon/ofi-nccl/lib",
        "NCCL_NET_PLUGIN": "ofi",
        "NCCL_SOCKET_IFNAME": "=ens32",
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_SUBSYS": "INIT,NET",
        "NCCL_DEBUG_FILE": env["NCCL_DEBUG_FILE"],
    }
    assert env["NCCL_DEBUG_FILE"].endswith("/rlport-efa-nccl.%h.%p.log")


def test_collectives_env_old_plugin_and_user_values(tmp_path: Path) -> None:
    found = detect(Host(efa_machine(tmp_path, plugin_version="1.5.0", instance="p4d.24xlarge"), {}))
    user = {
        "LD_LIBRARY_PATH": "/opt/amazon/ofi-nccl/lib:/usr/local/cuda/lib64",
        "NCCL_PROTO": "simple",
        "NCCL_NET_PLUGIN": "/opt/amazon/ofi-nccl/lib/libnccl-net-ofi.so",  # names the same plugin
        "NCCL_DEBUG": "INFO",
        "NCCL_DEBUG_FILE": "/var/log/nccl.%h.%p",
    }
    env = collectives_env(found, user, None)
    assert env == {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "NCCL_DEBUG_SUBSYS": "INIT,NET"}


def test_another_net_plugin_is_overridden_so_the_core_reports_the_conflict(tmp_path: Path) -> None:
    found = detect(Host(efa_machine(tmp_path), {}))
    assert collectives_env(found, {"NCCL_NET_PLUGIN": "spcx"}, None)["NCCL_NET_PLUGIN"] == "ofi"


def test_default_loaded_library_needs_no_net_plugin_name(tmp_path: Path) -> None:
    found = detect(Host(efa_machine(tmp_path, plugin_files=("libnccl-net.so",)), {}))
    assert "NCCL_NET_PLUGIN" not in collectives_env(found, {}, None)


def test_old_efa_installer_needs_the_sync_memops_workaround(tmp_path: Path) -> None:
    assert version_env(Version("1.7.3"), Version("1.19.0"), "p5.48xlarge", Version("1.28.0")) == {
        "FI_EFA_SET_CUDA_SYNC_MEMOPS": "0"
    }
    assert version_env(Version("1.7.3"), Version("1.19.0"), "p5.48xlarge", Version("1.29.0")) == {}
