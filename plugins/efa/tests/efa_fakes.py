"""A fake EFA machine as a folder tree (sysfs, /opt/amazon, a fake ``fi_info``) and NCCL log excerpts.

Nothing here is EFA hardware: the sysfs entries, the plugin library (a file holding the version
string aws-ofi-nccl embeds) and the ``fi_info`` script imitate what the real ones show, as documented
in aws-ofi-nccl, libfabric's ``fi_info`` and the kernel's efa driver. The logs are written for these
tests from the lines NCCL and aws-ofi-nccl print (nccl init.cc, aws-ofi-nccl src/nccl_ofi_net.cpp).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from rlport import bootstrap

PREFIXES = ("RLPORT_", "NCCL_", "FI_", "RDMAV_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No rlport runtime, no rlport variables and none of the variables EFA reads (autouse in every
    module that imports it; there is no conftest.py, whose module name would clash with others')."""
    bootstrap.reset()
    for key in list(os.environ):
        if key.startswith(PREFIXES) or key == "LD_LIBRARY_PATH":
            monkeypatch.delenv(key)
    monkeypatch.setenv("RLPORT_SUMMARY", "0")
    yield
    bootstrap.reset()


FI_INFO_OK = """#!/bin/sh
if [ "$1" = "--version" ]; then
  printf '%s: {v}\\nlibfabric: {v}\\nlibfabric api: 1.22\\n' "$0"; exit 0
fi
printf 'provider: efa\\n    fabric: efa\\n    domain: rdmap16s27-rdm\\n    version: 122.0\\n    type: FI_EP_RDM\\n    protocol: FI_PROTO_EFA\\n'
"""
FI_INFO_NO_EFA = """#!/bin/sh
if [ "$1" = "--version" ]; then printf 'fi_info: {v}\\nlibfabric: {v}\\n'; exit 0; fi
echo 'fi_getinfo: -61 (No data available)' >&2; exit 1
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def add_rdma_device(
    root: Path, name: str, *, driver: str | None = "efa", vendor: str = "0x1d0f", device: str = "0xefa1"
) -> None:
    """``/sys/class/infiniband/<name>/device`` with PCI ids and a ``driver`` link, as the kernel shows."""
    pci = root / "sys/devices/pci0000:00" / f"0000:00:{len(name):02x}.0"
    write(pci / "vendor", vendor + "\n")
    write(pci / "device", device + "\n")
    if driver:
        target = root / "sys/bus/pci/drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        (pci / "driver").symlink_to(target)
    dev = root / "sys/class/infiniband" / name
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "device").symlink_to(pci)


def add_plugin(
    root: Path,
    directory: str,
    version: str | None = "1.14.2",
    files: tuple[str, ...] = ("libnccl-net-ofi.so", "libnccl-net.so"),
) -> None:
    """aws-ofi-nccl libraries: bytes around the ``"NET/OFI Initializing " PACKAGE_STRING`` literal."""
    body = b"\x7fELF\x02\x01\x01" + b"\x00" * 64
    if version:
        body += b"NET/OFI Initializing aws-ofi-nccl " + version.encode() + b"\x00"
    body += b"NET/OFI Selected provider is %s, fabric is %s (found %d nics)\x00" + b"\x00" * 64
    for name in files:
        write(root / directory.lstrip("/") / name, body)


def add_interface(root: Path, name: str, state: str = "up") -> None:
    write(root / "sys/class/net" / name / "operstate", state + "\n")


def efa_machine(
    root: Path,
    *,
    plugin_version: str | None = "1.14.2",
    libfabric: str = "1.22.0amzn5.0",
    efa_provider: bool = True,
    instance: str = "p5.48xlarge",
    plugin_dir: str = "/opt/amazon/ofi-nccl/lib",
    plugin_files: tuple[str, ...] = ("libnccl-net-ofi.so", "libnccl-net.so"),
    interfaces: Mapping[str, str] | None = None,
) -> Path:
    """A whole fake EFA host under ``root``: two EFA devices, one mlx5 device, libfabric, the plugin."""
    add_rdma_device(root, "rdmap16s27")
    add_rdma_device(root, "rdmap32s27", driver=None, device="0xefa2")  # found by PCI id alone
    add_rdma_device(root, "mlx5_0", driver="mlx5_core", vendor="0x15b3", device="0x101d")
    script = (FI_INFO_OK if efa_provider else FI_INFO_NO_EFA).replace("{v}", libfabric)
    write(root / "opt/amazon/efa/bin/fi_info", script).chmod(0o755)
    write(
        root / "opt/amazon/efa_installed_packages",
        "# EFA installer version: 1.40.0\n# Debug packages installed: no\n",
    )
    write(root / "sys/devices/virtual/dmi/id/product_name", instance + "\n")
    if plugin_dir:
        add_plugin(root, plugin_dir, plugin_version, plugin_files)
    for name, state in (interfaces or {"lo": "unknown", "docker0": "up", "ens32": "up"}).items():
        add_interface(root, name, state)
    return root


PREFIX = "ip-10-0-0-5:4021:4021 [0] NCCL INFO "


def log(*lines: str) -> str:
    return "".join(PREFIX + line + "\n" for line in lines)


PROVES_EFA = log(
    "NCCL version 2.27.3+cuda12.9",
    "NET/Plugin: Loaded net plugin Libfabric (v10)",
    "NET/OFI Initializing aws-ofi-nccl 1.14.2",
    "NET/OFI Using Libfabric version 1.22",
    "NET/OFI Using CUDA driver version 12090 with runtime 12090",
    "NET/OFI Setting provider_filter to efa",
    "NET/OFI Selected provider is efa, fabric is efa-direct (found 32 nics)",
    "NET/OFI Using transport protocol RDMA (platform set)",
    "Using network Libfabric",
    "ncclCommInitRank comm 0x55d0c3a0 rank 0 nranks 16 cudaDev 0 nvmlDev 0 busId 53000 commId 0x1f - Init COMPLETE",
)

SOCKET_FALLBACK = log(
    "NCCL version 2.27.3+cuda12.9",
    "NET/Plugin: Could not find: libnccl-net.so. Using internal network plugin.",
    "NET/IB : No device found.",
    "NET/Socket : Using [0]ens32:10.0.0.5<0>",
    "Using network Socket",
    "ncclCommInitRank comm 0x55d0c3a0 rank 0 nranks 16 cudaDev 0 nvmlDev 0 busId 53000 commId 0x1f - Init COMPLETE",
)

# A plugin built against another libfabric than the one the loader finds (awsome-distributed-ai #284).
PLUGIN_LIBFABRIC_MISMATCH = log(
    "NCCL version 2.27.3+cuda12.9",
    "NET/Plugin: Failed to open libnccl-net-ofi.so: /opt/amazon/ofi-nccl/lib/libnccl-net-ofi.so: version "
    "`EFA_1.2' not found (required by /opt/amazon/ofi-nccl/lib/libnccl-net-ofi.so)",
    "NET/Plugin: Could not find: libnccl-net-ofi.so. Using internal network plugin.",
    "Using network Socket",
)

# NCCL loaded an older aws-ofi-nccl from another folder than the one rlport configured for.
OTHER_PLUGIN_VERSION = PROVES_EFA.replace("aws-ofi-nccl 1.14.2", "aws-ofi-nccl 1.9.1")

TCP_PROVIDER = PROVES_EFA.replace(
    "Selected provider is efa, fabric is efa-direct", "Selected provider is tcp, fabric is 10.0.0.0/24"
)
