"""What of EFA this machine has, read without torch: devices in sysfs, libfabric's efa provider, and
the aws-ofi-nccl library with its version.

- Devices: ``/sys/class/infiniband/<dev>/device`` whose ``driver`` link names ``efa``, or whose PCI
  ``vendor``/``device`` are Amazon's EFA ids (the kernel driver's ``efa_pci_tbl``).
- libfabric: ``fi_info -p efa -t FI_EP_RDM`` succeeds (AWS EFA guide), ``fi_info --version`` prints
  ``libfabric: 1.22.0amzn5.0``.
- aws-ofi-nccl: ``libnccl-net-ofi.so`` (loaded with ``NCCL_NET_PLUGIN=ofi``) and/or the default-loaded
  ``libnccl-net.so`` (src/Makefile.am). Both are built ``-avoid-version``, so the file name carries
  no version; the library embeds ``"Initializing " PACKAGE_STRING`` (src/nccl_ofi_net.cpp), that is
  ``aws-ofi-nccl 1.14.2``, which is read from its bytes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from rlport_efa.host import EFA_PREFIX, PLUGIN_DIRS, Host

AMAZON_VENDOR = "0x1d0f"
EFA_DEVICE_IDS = ("0xefa0", "0xefa1", "0xefa2", "0xefa3", "0xefa4")  # efa_main.c, efa_pci_tbl
PLUGIN_FILES = ("libnccl-net-ofi.so", "libnccl-net-aws-ofi.so", "libnccl-net.so")  # preferred first
NET_PLUGIN_NAME = {"libnccl-net-ofi.so": "ofi", "libnccl-net-aws-ofi.so": "aws-ofi", "libnccl-net.so": ""}
_PACKAGE_STRING = re.compile(rb"aws-ofi-nccl (\d+\.\d+\.\d+)")
_LIBFABRIC_VERSION = re.compile(r"^libfabric: (\d+\.\d+(?:\.\d+)?)", re.M)
FI_INFO_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class OfiPlugin:
    """The aws-ofi-nccl library found: its folder, file, version (None when unreadable)."""

    directory: str
    file: str
    version: Version | None
    files: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.file}"

    @property
    def net_plugin(self) -> str:
        """The ``NCCL_NET_PLUGIN`` value that loads it (``""``: NCCL loads ``libnccl-net.so`` itself)."""
        return NET_PLUGIN_NAME[self.file]


@dataclass(frozen=True)
class Libfabric:
    """``fi_info``'s answer: where it is, whether the efa provider offers RDM endpoints, the version."""

    fi_info: str | None
    efa_provider: bool
    version: Version | None
    detail: str = ""


@dataclass(frozen=True)
class Detection:
    devices: tuple[str, ...]
    libfabric: Libfabric
    plugin: OfiPlugin | None
    instance_type: str = ""
    installer_version: Version | None = None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def efa_devices(host: Host) -> tuple[str, ...]:
    """Names of the RDMA devices in sysfs that are EFA (driver ``efa`` or an EFA PCI id)."""
    root = host.path("/sys/class/infiniband")
    found = []
    for dev in sorted(root.iterdir()) if root.is_dir() else ():
        pci = dev / "device"
        driver = pci / "driver"
        by_driver = driver.is_symlink() and Path(driver.readlink()).name == "efa"
        by_id = _read(pci / "vendor") == AMAZON_VENDOR and _read(pci / "device") in EFA_DEVICE_IDS
        if by_driver or by_id:
            found.append(dev.name)
    return tuple(found)


def plugin_version(library: Path) -> Version | None:
    """The aws-ofi-nccl version embedded in ``library`` (its PACKAGE_STRING), or None."""
    try:
        match = _PACKAGE_STRING.search(library.read_bytes())
    except OSError:
        return None
    return Version(match.group(1).decode()) if match else None


def find_plugin(host: Host) -> OfiPlugin | None:
    """The first folder (``LD_LIBRARY_PATH`` first, then the install locations) holding the plugin."""
    seen: set[str] = set()
    for directory in [*host.loader_dirs(), *PLUGIN_DIRS]:
        if directory in seen:
            continue
        seen.add(directory)
        files = tuple(f for f in PLUGIN_FILES if host.path(f"{directory}/{f}").is_file())
        if files:
            library = host.path(f"{directory}/{files[0]}")
            return OfiPlugin(directory, files[0], plugin_version(library), files)
    return None


def _fi_info_path(host: Host) -> str | None:
    bundled = host.path(f"{EFA_PREFIX}/bin/fi_info")
    if bundled.is_file():
        return str(bundled)
    if host.root == Path("/"):
        return shutil.which("fi_info", path=host.env.get("PATH"))
    return None


def _numeric(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def libfabric(host: Host) -> Libfabric:
    """Run ``fi_info`` for the efa provider's RDM endpoints and its version."""
    exe = _fi_info_path(host)
    if exe is None:
        return Libfabric(None, False, None, f"fi_info not found in {EFA_PREFIX}/bin or on PATH")
    env = {k: v for k, v in host.env.items() if k != "FI_PROVIDER"}
    try:
        probe = subprocess.run(
            [exe, "-p", "efa", "-t", "FI_EP_RDM"],
            capture_output=True,
            text=True,
            timeout=FI_INFO_TIMEOUT_S,
            env=env,
        )
        version = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=FI_INFO_TIMEOUT_S, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Libfabric(exe, False, None, f"{exe} failed: {exc}")
    ok = probe.returncode == 0 and re.search(r"provider:\s*efa\b", probe.stdout) is not None
    match = _LIBFABRIC_VERSION.search(version.stdout)
    detail = "" if ok else (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
    return Libfabric(exe, ok, _numeric(match.group(1)) if match else None, "" if ok else detail[0])


def installer_version(host: Host) -> Version | None:
    """The EFA installer's version from ``/opt/amazon/efa_installed_packages`` (``# EFA installer version: 1.40.0``)."""
    match = re.search(
        r"EFA installer version:\s*(\d+\.\d+(?:\.\d+)?)",
        _read(host.path("/opt/amazon/efa_installed_packages")),
    )
    return Version(match.group(1)) if match else None


def detect(host: Host) -> Detection:
    """Everything above; ``fi_info`` runs only when an EFA device exists (the probe stays cheap elsewhere)."""
    devices = efa_devices(host)
    fabric = libfabric(host) if devices else Libfabric(None, False, None, "not checked: no EFA device")
    return Detection(
        devices=devices,
        libfabric=fabric,
        plugin=find_plugin(host),
        instance_type=_read(host.path("/sys/devices/virtual/dmi/id/product_name")),
        installer_version=installer_version(host),
    )
