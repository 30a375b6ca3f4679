"""rlport fabric plugin for AWS EFA (Elastic Fabric Adapter): NCCL over aws-ofi-nccl and libfabric.

It composes with any active device plugin whose collectives backend is ``nccl`` (its manifest says
``tunes_backends=("nccl",)``; with gloo or hccl the core leaves it out, with the reason). Cheap to
import: the standard library and rlport only; torch is imported by the preflight alone.
"""

from __future__ import annotations

import os
from typing import Any

import rlport
from rlport import settings
from rlport.types import DeviceInfo, Finding, Manifest, PreflightResult, ProbeResult
from rlport_efa import doctor, envplan, netif, preflight
from rlport_efa.detect import EFA_DEVICE_IDS, Detection, detect
from rlport_efa.host import EFA_PREFIX, PLUGIN_DIRS, Host

BACKEND = "nccl"
INSTALL = (
    "install the EFA software without the kernel module in containers: curl -O "
    "https://efa-installer.amazonaws.com/aws-efa-installer-latest.tar.gz && tar -xf aws-efa-installer-latest.tar.gz "
    "&& cd aws-efa-installer && ./efa_installer.sh -y --skip-kmod"
)


def unavailable_reason(found: Detection) -> str | None:
    """Why NCCL cannot run over EFA here (with what to do), or None when it can."""
    if not found.devices:
        return (
            "no EFA device in /sys/class/infiniband (driver efa, or PCI 1d0f:"
            f"{'/'.join(i[2:] for i in EFA_DEVICE_IDS)}); run on an EFA-enabled instance with EFA interfaces "
            "attached (containers: --device /dev/infiniband)"
        )
    names = ", ".join(found.devices)
    if not found.libfabric.efa_provider:
        return f"EFA device {names} found, but libfabric has no efa provider ({found.libfabric.detail}); {INSTALL}"
    if found.plugin is None:
        return (
            f"EFA device {names} and libfabric's efa provider found, but no aws-ofi-nccl library "
            f"(libnccl-net-ofi.so / libnccl-net.so) on LD_LIBRARY_PATH or in {', '.join(PLUGIN_DIRS)}; {INSTALL}"
        )
    return None


class EfaPlugin:
    rlport_manifest = Manifest(
        name="efa",
        kind="fabric",
        hook_api=">=1.0,<2",
        description="NCCL over AWS EFA (aws-ofi-nccl, libfabric efa provider)",
        tunes_backends=(BACKEND,),
    )

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str], Detection] = {}

    def detection(self, host: Host) -> Detection:
        """What :func:`~rlport_efa.detect.detect` finds on ``host``, once per root and loader path."""
        key = (str(host.root), host.env.get("LD_LIBRARY_PATH", ""), host.env.get("PATH", ""))
        if key not in self._found:
            self._found[key] = detect(host)
        return self._found[key]

    @rlport.hookimpl
    def rlport_probe(self) -> ProbeResult:
        found = self.detection(Host.from_env())
        reason = unavailable_reason(found)
        if reason:
            return ProbeResult(False, reason)
        plugin = found.plugin
        assert plugin is not None
        fabric = found.libfabric.version or "(version unknown)"
        return ProbeResult(
            True,
            f"{len(found.devices)} EFA device(s) ({', '.join(found.devices)}); libfabric {fabric} efa provider; "
            f"aws-ofi-nccl {plugin.version or '(version unknown)'} at {plugin.path}",
        )

    @rlport.hookimpl
    def rlport_collectives_env(self, backend: str) -> dict[str, str] | None:
        if backend != BACKEND:
            return None
        host = Host.from_env()
        ifname = None if "NCCL_SOCKET_IFNAME" in host.env else netif.socket_ifname(host)
        return envplan.collectives_env(self.detection(host), host.env, ifname)

    @rlport.hookimpl
    def rlport_doctor(self, device: DeviceInfo) -> list[Finding]:
        host = Host.from_env()
        return doctor.findings(host, self.detection(host), settings.exported())

    @rlport.hookimpl
    def rlport_collectives_preflight(self, backend: str, group: Any) -> list[PreflightResult] | None:
        if backend != BACKEND:
            return None
        plugin = self.detection(Host.from_env()).plugin
        return [
            preflight.check(
                lambda: preflight.all_reduce(group),
                dict(os.environ),
                plugin_dir=plugin.directory if plugin else None,
                expected_version=plugin.version if plugin else None,
            )
        ]


plugin = EfaPlugin()

__all__ = ["EFA_PREFIX", "EfaPlugin", "plugin"]
