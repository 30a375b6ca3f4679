"""The socket interface NCCL bootstraps over: a real interface, not loopback, a container bridge or
a link-local address.

Interfaces are the entries of ``/sys/class/net``; addresses come from ``psutil.net_if_addrs`` when
psutil is installed, else from the standard library (``SIOCGIFADDR`` through ``fcntl.ioctl``, IPv4).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable, Mapping

from rlport_efa.host import Host

# Container and virtual-switch interfaces: Docker, veth pairs, bridges, CNI plug-ins, libvirt, and
# the agent interface verl's EFA image excludes (docker/aws/Dockerfile.extention.awsefa).
VIRTUAL_PREFIXES = (
    "lo",
    "docker",
    "veth",
    "br-",
    "virbr",
    "cni",
    "flannel",
    "cali",
    "weave",
    "kube",
    "vxlan",
    "tun",
    "tap",
)

Addresses = Callable[[str], list[str]]


def _stdlib_addresses(name: str) -> list[str]:
    import fcntl

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
        except OSError:
            return []
    return [socket.inet_ntoa(packed[20:24])]


def system_addresses() -> Addresses:
    """Per-interface addresses from psutil when installed, else from the standard library."""
    try:
        import psutil
    except ImportError:
        return _stdlib_addresses
    table = psutil.net_if_addrs()
    families = (socket.AF_INET, socket.AF_INET6)
    return lambda name: [a.address.split("%")[0] for a in table.get(name, ()) if a.family in families]


def _routable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def candidates(host: Host, addresses: Addresses) -> list[str]:
    """Interfaces in ``/sys/class/net`` that are up, not virtual, and hold a routable address."""
    root = host.path("/sys/class/net")
    names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    good = []
    for name in names:
        if name.startswith(VIRTUAL_PREFIXES):
            continue
        state = (
            (root / name / "operstate").read_text().strip() if (root / name / "operstate").is_file() else ""
        )
        if state not in ("up", "unknown"):
            continue
        if any(_routable(a) for a in addresses(name)):
            good.append(name)
    return good


def socket_ifname(host: Host, addresses: Addresses | None = None) -> str | None:
    """The ``NCCL_SOCKET_IFNAME`` value naming those interfaces exactly (``=ens5,ens6``), or None."""
    names = candidates(host, addresses or system_addresses())
    return "=" + ",".join(names) if names else None


def fake_addresses(table: Mapping[str, list[str]]) -> Addresses:
    """An address lookup over a fixed table (for tests and dry runs)."""
    return lambda name: list(table.get(name, ()))
