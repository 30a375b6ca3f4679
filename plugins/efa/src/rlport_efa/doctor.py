"""``rlport doctor`` findings for NCCL over EFA, each with its fix (pure over a :class:`Host`, the
detection and the installed distributions).

- A pip NCCL wheel (``nvidia-nccl-cu12``/``-cu13``, which pip's torch brings) whose version differs
  from the system NCCL that aws-ofi-nccl was built against: torch loads the wheel's.
- ``NCCL_NET_PLUGIN`` / ``NCCL_NET`` naming another network (NGC images default to another plugin).
- Variables aws-ofi-nccl's doc/efa-env-var.md calls obsolete for the detected versions, harmful
  (``RDMAV_*``, ``NCCL_PROTO=simple`` with a plugin newer than 1.5), or best left at NCCL's default.
- ``LD_LIBRARY_PATH`` exported without the plugin's folder (workers would not find it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from importlib import metadata

from packaging.version import Version

from rlport.types import Finding
from rlport_efa.detect import Detection
from rlport_efa.envplan import (
    OLD_PLUGIN,
    RDMA_BY_DEFAULT_LIBFABRIC,
    RDMA_BY_DEFAULT_PLUGIN,
    names_ofi_plugin,
    version_env,
)
from rlport_efa.host import Host
from rlport_efa.nccl_log import OFI_NETWORKS

CHECK = "efa"
PIP_NCCL = ("nvidia-nccl-cu12", "nvidia-nccl-cu13")
SYSTEM_NCCL_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/cuda/lib64",
    "/usr/local/nccl/lib",
    "/opt/nccl/lib",
)
_SYSTEM_NCCL = re.compile(r"^libnccl\.so\.(\d+\.\d+\.\d+)$")
DEFAULT_ONLY = ("NCCL_MIN_CHANNELS", "NCCL_BUFFSIZE")
NOT_FOR_EFA = ("NCCL_SOCKET_NTHREADS", "NCCL_NSOCKS_PERTHREAD")


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def system_nccl(host: Host) -> tuple[str, Version] | None:
    """The first system ``libnccl.so.X.Y.Z`` (its real file name carries the version)."""
    for directory in SYSTEM_NCCL_DIRS:
        folder = host.path(directory)
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            match = _SYSTEM_NCCL.match(entry.name)
            if match:
                return f"{directory}/{entry.name}", Version(match.group(1))
    return None


def shadowing(host: Host, version_of: Callable[[str], str | None] = installed_version) -> list[Finding]:
    system = system_nccl(host)
    if system is None:
        return []
    path, system_version = system
    out = []
    for dist in PIP_NCCL:
        wheel = version_of(dist)
        if wheel is not None and Version(wheel).release[:3] != system_version.release[:3]:
            out.append(
                Finding(
                    CHECK,
                    f"pip's {dist} {wheel} shadows the system NCCL {system_version} ({path}) that aws-ofi-nccl "
                    "was built against: torch loads the wheel's NCCL",
                    f"pip install '{dist}=={system_version}'   (or export LD_PRELOAD={path})",
                )
            )
    return out


def _unset(var: str, why: str, value: str) -> Finding:
    return Finding(CHECK, f"{var}={value!r} is exported: {why}", f"unset {var}")


def exported_variables(detection: Detection, env: dict[str, str], ours: Iterable[str]) -> list[Finding]:
    """Obsolete, harmful and foreign-network variables the user exported (not those rlport set)."""
    user = {k: v for k, v in env.items() if k not in set(ours)}
    plugin = detection.plugin
    version = plugin.version if plugin else None
    fabric = detection.libfabric.version
    needed = version_env(version, fabric, detection.instance_type, detection.installer_version)
    newer = version is None or version >= OLD_PLUGIN
    label = f"aws-ofi-nccl {version or '(version unknown)'}"
    out = []
    for var in sorted(k for k in user if k.startswith("RDMAV_")):
        out.append(
            _unset(var, "rdma-core variables must never be set with EFA (doc/efa-env-var.md)", user[var])
        )
    if "FI_EFA_FORK_SAFE" in user:
        out.append(
            _unset("FI_EFA_FORK_SAFE", "not needed, aws-ofi-nccl sets it itself", user["FI_EFA_FORK_SAFE"])
        )
    if "FI_EFA_USE_DEVICE_RDMA" in user and "FI_EFA_USE_DEVICE_RDMA" not in needed:
        newest = (version is None or version >= RDMA_BY_DEFAULT_PLUGIN) and (
            fabric is None or fabric >= RDMA_BY_DEFAULT_LIBFABRIC
        )
        why = (
            "not needed with libfabric>=1.18 and aws-ofi-nccl>=1.7"
            if newest
            else "this instance has no GPUDirect RDMA"
        )
        out.append(_unset("FI_EFA_USE_DEVICE_RDMA", why, user["FI_EFA_USE_DEVICE_RDMA"]))
    if "FI_EFA_SET_CUDA_SYNC_MEMOPS" in user and "FI_EFA_SET_CUDA_SYNC_MEMOPS" not in needed:
        why = f"only a workaround for EFA installers before 1.29 (this one: {detection.installer_version or 'unknown'})"
        out.append(_unset("FI_EFA_SET_CUDA_SYNC_MEMOPS", why, user["FI_EFA_SET_CUDA_SYNC_MEMOPS"]))
    if "NCCL_PROTO" in user and user["NCCL_PROTO"].lower() == "simple" and newer:
        out.append(_unset("NCCL_PROTO", f"only for aws-ofi-nccl<=1.5.0; slows {label}", user["NCCL_PROTO"]))
    provider = user.get("FI_PROVIDER")
    if provider is not None and provider != "efa":
        out.append(_unset("FI_PROVIDER", "it keeps aws-ofi-nccl off the efa provider", provider))
    elif provider == "efa" and newer:
        out.append(
            _unset("FI_PROVIDER", f"only for aws-ofi-nccl<=1.5.0; {label} selects efa itself", provider)
        )
    for var in DEFAULT_ONLY:
        if var in user:
            out.append(_unset(var, "EFA runs best on NCCL's default (doc/efa-env-var.md)", user[var]))
    for var in NOT_FOR_EFA:
        if var in user:
            out.append(_unset(var, "a socket-transport setting that does not apply to EFA", user[var]))
    if plugin is not None:
        net_plugin = user.get("NCCL_NET_PLUGIN")
        if net_plugin and not names_ofi_plugin(net_plugin, plugin):
            out.append(
                Finding(
                    CHECK,
                    f"NCCL_NET_PLUGIN={net_plugin!r} names another network plugin, not aws-ofi-nccl ({plugin.path})",
                    f"export NCCL_NET_PLUGIN={plugin.net_plugin or 'ofi'}   (or unset it)",
                )
            )
        loader = user.get("LD_LIBRARY_PATH")
        if loader and plugin.directory not in loader.split(":"):
            out.append(
                Finding(
                    CHECK,
                    f"LD_LIBRARY_PATH={loader!r} is exported without aws-ofi-nccl's folder {plugin.directory}: worker "
                    "processes would not load the plugin",
                    f"export LD_LIBRARY_PATH={plugin.directory}:$LD_LIBRARY_PATH",
                )
            )
    net = user.get("NCCL_NET")
    if net and net not in OFI_NETWORKS:
        out.append(_unset("NCCL_NET", f"it forces NCCL's {net!r} network instead of EFA", net))
    return out


def findings(host: Host, detection: Detection, ours: Iterable[str]) -> list[Finding]:
    """Every finding above for this machine."""
    return shadowing(host) + exported_variables(detection, dict(host.env), ours)
