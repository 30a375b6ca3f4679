"""Probe and detection against a fake sysfs / /opt tree (no EFA hardware here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from efa_fakes import add_plugin, clean_env, efa_machine  # noqa: F401 (autouse fixture)
from packaging.version import Version
from rlport_efa import EfaPlugin
from rlport_efa.detect import detect, efa_devices, find_plugin, plugin_version
from rlport_efa.host import Host


def host(root: Path, **env: str) -> Host:
    return Host(root, {"PATH": "/usr/bin:/bin", **env})


def test_efa_devices_by_driver_link_or_pci_id_and_not_other_rdma(tmp_path: Path) -> None:
    efa_machine(tmp_path)
    assert efa_devices(host(tmp_path)) == ("rdmap16s27", "rdmap32s27")  # mlx5_0 is not EFA


def test_full_detection(tmp_path: Path) -> None:
    found = detect(host(efa_machine(tmp_path)))
    assert found.libfabric.efa_provider and found.libfabric.version == Version("1.22.0")
    assert found.plugin is not None
    assert (found.plugin.directory, found.plugin.file, found.plugin.version) == (
        "/opt/amazon/ofi-nccl/lib",
        "libnccl-net-ofi.so",
        Version("1.14.2"),
    )
    assert found.plugin.net_plugin == "ofi" and found.plugin.files == ("libnccl-net-ofi.so", "libnccl-net.so")
    assert found.instance_type == "p5.48xlarge" and found.installer_version == Version("1.40.0")


def test_plugin_version_is_read_from_the_library_bytes(tmp_path: Path) -> None:
    add_plugin(tmp_path, "/lib", "1.7.4")
    assert plugin_version(tmp_path / "lib/libnccl-net-ofi.so") == Version("1.7.4")
    add_plugin(tmp_path, "/nover", None)
    assert plugin_version(tmp_path / "nover/libnccl-net-ofi.so") is None


def test_loader_path_comes_before_the_install_folders(tmp_path: Path) -> None:
    efa_machine(tmp_path)
    add_plugin(tmp_path, "/home/me/ofi/lib", "1.16.0", files=("libnccl-net.so",))
    found = find_plugin(host(tmp_path, LD_LIBRARY_PATH="/nowhere:/home/me/ofi/lib"))
    assert found is not None and found.path == "/home/me/ofi/lib/libnccl-net.so"
    assert found.version == Version("1.16.0") and found.net_plugin == ""


def probe(root: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RLPORT_EFA_ROOT", str(root))
    return EfaPlugin().rlport_probe()


def test_probe_available_says_what_it_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = probe(efa_machine(tmp_path), monkeypatch)
    assert result.available
    assert result.reason == (
        "2 EFA device(s) (rdmap16s27, rdmap32s27); libfabric 1.22.0 efa provider; "
        "aws-ofi-nccl 1.14.2 at /opt/amazon/ofi-nccl/lib/libnccl-net-ofi.so"
    )


def test_probe_without_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sys").mkdir()
    result = probe(tmp_path, monkeypatch)
    assert not result.available and result.reason.startswith("no EFA device in /sys/class/infiniband")


def test_probe_without_efa_provider_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = probe(efa_machine(tmp_path, efa_provider=False), monkeypatch)
    assert not result.available
    assert "libfabric has no efa provider (fi_getinfo: -61 (No data available))" in result.reason
    assert "./efa_installer.sh -y --skip-kmod" in result.reason


def test_probe_without_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = probe(efa_machine(tmp_path, plugin_dir=""), monkeypatch)
    assert not result.available and "no aws-ofi-nccl library" in result.reason
    assert "/opt/amazon/ofi-nccl/lib" in result.reason


def test_probe_imports_no_torch(tmp_path: Path) -> None:
    efa_machine(tmp_path)
    code = (
        "import sys, rlport_efa; r = rlport_efa.plugin.rlport_probe(); "
        "print(r.available, sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"RLPORT_EFA_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[]"]
