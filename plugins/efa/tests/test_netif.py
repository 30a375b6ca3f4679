"""The socket interface choice over a fake /sys/class/net, and the real standard-library lookup."""

from __future__ import annotations

from pathlib import Path

from efa_fakes import add_interface, clean_env  # noqa: F401 (autouse fixture)
from rlport_efa.host import Host
from rlport_efa.netif import _stdlib_addresses, candidates, fake_addresses, socket_ifname

ADDRESSES = {
    "lo": ["127.0.0.1", "::1"],
    "docker0": ["172.17.0.1"],
    "veth1a2b": ["fe80::1"],
    "br-9f3c": ["172.18.0.1"],
    "ens32": ["10.0.0.5", "fe80::8ff:fe00:1"],
    "ens33": ["169.254.3.1", "fe80::2"],  # link-local only
    "ens34": ["10.0.1.9"],  # down
    "ens35": ["10.0.2.9"],
}


def tree(root: Path) -> Host:
    for name in ADDRESSES:
        add_interface(root, name, "down" if name == "ens34" else ("unknown" if name == "lo" else "up"))
    return Host(root, {})


def test_only_real_up_interfaces_with_routable_addresses(tmp_path: Path) -> None:
    host = tree(tmp_path)
    assert candidates(host, fake_addresses(ADDRESSES)) == ["ens32", "ens35"]
    assert socket_ifname(host, fake_addresses(ADDRESSES)) == "=ens32,ens35"


def test_none_when_only_virtual_interfaces(tmp_path: Path) -> None:
    host = tree(tmp_path)
    only_virtual = {k: v for k, v in ADDRESSES.items() if not k.startswith("ens")}
    assert socket_ifname(host, fake_addresses(only_virtual)) is None


def test_standard_library_reads_the_loopback_address() -> None:
    assert _stdlib_addresses("lo") == ["127.0.0.1"]
    assert _stdlib_addresses("no-such-if0") == []
