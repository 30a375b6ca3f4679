"""Sources of fixture plugins, written into real installed distributions by the tests."""

from __future__ import annotations


def device(
    name: str,
    *,
    priority: int = 100,
    available: bool = True,
    reason: str = "fixture device present",
    hook_api: str = ">=1.0,<2",
    body: str = "",
) -> str:
    """A device plugin that runs on the host (device_type cpu) with extra hook methods in ``body``."""
    return f'''
import rlport
from rlport.types import DeviceInfo, Manifest, ProbeResult


class Plugin:
    rlport_manifest = Manifest(name="{name}", kind="device", hook_api="{hook_api}")

    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available={available}, reason="{reason}", priority={priority})

    @rlport.hookimpl
    def rlport_device_info(self):
        return DeviceInfo(device_type="cpu", count=1, names=("{name}",), collectives_backend="gloo")
{body}

plugin = Plugin()
'''


def fabric(name: str, *, tunes: tuple[str, ...] = (), env_var: str = "RLPORT_TEST_FABRIC") -> str:
    """A fabric plugin that tunes the backends ``tunes`` (empty: any) and sets ``env_var`` to its name."""
    return f'''
import rlport
from rlport.types import Manifest, ProbeResult


class Fabric:
    rlport_manifest = Manifest(name="{name}", kind="fabric", hook_api=">=1.0,<2", tunes_backends={tunes!r})

    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available=True, reason="{name} adapter present")

    @rlport.hookimpl
    def rlport_collectives_env(self, backend):
        return {{"{env_var}": "{name}"}}


plugin = Fabric()
'''
