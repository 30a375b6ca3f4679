"""Reading NCCL's INIT/NET debug log: which network NCCL chose and whether aws-ofi-nccl runs on the
efa provider (pure functions; no NCCL needed).

Lines that prove EFA: ``NET/OFI Selected provider is efa, fabric is efa (found 4 nics)``
(aws-ofi-nccl src/nccl_ofi_net.cpp) and NCCL's own ``Using network Libfabric`` (``AWS Libfabric`` in
older plugins and the Neuron interface). A fallback shows ``Using network Socket`` (or ``IB``) and
``No plugin found`` / ``NET/Plugin: Could not find: libnccl-net.so``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import Version

from rlport.types import PreflightResult

OFI_NETWORKS = ("Libfabric", "AWS Libfabric")
CHECK = "EFA transport (aws-ofi-nccl)"

_NETWORK = re.compile(r"Using network (.+?)\s*$", re.M)
_PROVIDER = re.compile(r"NET/OFI Selected provider is ([\w-]+), fabric is ([\w-]+)(?: \(found (\d+) nics\))?")
_PLUGIN = re.compile(r"NET/OFI Initializing aws-ofi-nccl (\d+\.\d+\.\d+)")
_LIBFABRIC = re.compile(r"NET/OFI Using Libfabric version (\d+\.\d+)")
_MISSING = re.compile(r"No plugin found|NET/Plugin: Could not find")
_SYMBOL = re.compile(r"version [`']([\w.]+)' not found")


@dataclass(frozen=True)
class NcclTransport:
    """What one rank's log says."""

    network: str | None = None
    provider: str | None = None
    fabric: str | None = None
    nics: int | None = None
    plugin_version: str | None = None
    libfabric_version: str | None = None
    plugin_missing: bool = False
    missing_symbol: str | None = None
    lines: int = 0

    @property
    def proves_efa(self) -> bool:
        return self.network in OFI_NETWORKS and self.provider == "efa"


def parse(text: str) -> NcclTransport:
    """The transport facts in an NCCL debug log (the last ``Using network`` line wins)."""
    networks = _NETWORK.findall(text)
    provider = _PROVIDER.search(text)
    plugin = _PLUGIN.search(text)
    fabric = _LIBFABRIC.search(text)
    symbol = _SYMBOL.search(text)
    return NcclTransport(
        network=networks[-1] if networks else None,
        provider=provider.group(1) if provider else None,
        fabric=provider.group(2) if provider else None,
        nics=int(provider.group(3)) if provider and provider.group(3) else None,
        plugin_version=plugin.group(1) if plugin else None,
        libfabric_version=fabric.group(1) if fabric else None,
        plugin_missing=_MISSING.search(text) is not None,
        missing_symbol=symbol.group(1) if symbol else None,
        lines=len(text.splitlines()),
    )


def verdict(
    transport: NcclTransport,
    *,
    source: str,
    plugin_dir: str | None = None,
    expected_version: Version | None = None,
) -> PreflightResult:
    """Pass only when the log shows NCCL on the OFI plugin with the efa provider (and, when known,
    the aws-ofi-nccl version rlport configured for); otherwise fail with the fix."""
    where = plugin_dir or "/opt/amazon/ofi-nccl/lib"
    load_fix = (
        f"make NCCL load aws-ofi-nccl: export LD_LIBRARY_PATH={where}:$LD_LIBRARY_PATH NCCL_NET_PLUGIN=ofi, "
        "then run `rlport doctor`"
    )
    if transport.lines == 0 or (transport.network is None and transport.provider is None):
        return PreflightResult(
            CHECK,
            False,
            f"no NCCL INIT/NET lines in {source}",
            "let NCCL_DEBUG=INFO and NCCL_DEBUG_SUBSYS=INIT,NET reach NCCL (unset your own NCCL_DEBUG*)",
        )
    if transport.missing_symbol:
        return PreflightResult(
            CHECK,
            False,
            f"NCCL could not load aws-ofi-nccl: symbol version {transport.missing_symbol} not found, so the "
            f"plugin was built against another libfabric; NCCL fell back to {transport.network or 'its internal network'}",
            "put the EFA installer's libfabric first: export LD_LIBRARY_PATH=/opt/amazon/efa/lib:$LD_LIBRARY_PATH, "
            "or reinstall aws-ofi-nccl built for this EFA installer",
        )
    if transport.network not in OFI_NETWORKS:
        why = "no net plugin was found" if transport.plugin_missing else "the plugin was not chosen"
        return PreflightResult(
            CHECK, False, f"NCCL is using network {transport.network!r} ({why}), not EFA", load_fix
        )
    if transport.provider != "efa":
        return PreflightResult(
            CHECK,
            False,
            f"aws-ofi-nccl runs on libfabric provider {transport.provider!r}, not efa",
            "unset FI_PROVIDER (or export FI_PROVIDER=efa) and check `fi_info -p efa -t FI_EP_RDM`",
        )
    if (
        expected_version is not None
        and transport.plugin_version
        and Version(transport.plugin_version) != expected_version
    ):
        return PreflightResult(
            CHECK,
            False,
            f"NCCL loaded aws-ofi-nccl {transport.plugin_version}, but rlport configured for {expected_version} "
            f"in {where}",
            f"put {where} first on LD_LIBRARY_PATH, or remove the other aws-ofi-nccl",
        )
    detail = (
        f"NCCL network {transport.network}, provider efa, fabric {transport.fabric}"
        + (f", {transport.nics} NICs" if transport.nics is not None else "")
        + (f", aws-ofi-nccl {transport.plugin_version}" if transport.plugin_version else "")
        + (f", libfabric {transport.libfabric_version}" if transport.libfabric_version else "")
    )
    return PreflightResult(CHECK, True, detail)
