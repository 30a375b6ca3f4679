"""The environment NCCL needs over EFA, by aws-ofi-nccl and libfabric version (pure functions).

From aws-ofi-nccl's doc/efa-env-var.md:

- ``FI_PROVIDER=efa`` and ``NCCL_PROTO=simple``: only for aws-ofi-nccl <= 1.5.0 (newer plugins select
  the efa provider themselves when ``FI_PROVIDER`` is unset, src/platform-aws.cpp).
- ``FI_EFA_USE_DEVICE_RDMA=1``: only on GPUDirect-RDMA instances (p4/p5 and later) with
  aws-ofi-nccl < 1.7.0, or with libfabric < 1.18.0; not needed with both newer.
- ``FI_EFA_SET_CUDA_SYNC_MEMOPS=0``: only with an EFA installer older than 1.29 (aws-ofi-nccl #584).
- ``FI_EFA_FORK_SAFE``: not needed (the plugin sets it); ``RDMAV_*``: never set;
  ``NCCL_MIN_CHANNELS``/``NCCL_BUFFSIZE``: leave at NCCL's default.

Plus what rlport adds: the plugin's folder on ``LD_LIBRARY_PATH`` (for worker processes), the
``NCCL_NET_PLUGIN`` name that loads it, a socket interface, and the NCCL debug output the preflight
reads. A variable the user already exported is left to them (and checked by ``rlport doctor``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping

from packaging.version import Version

from rlport_efa.detect import Detection, OfiPlugin

OLD_PLUGIN = Version("1.6.0")  # below: "aws-ofi-nccl<=1.5.0"
RDMA_BY_DEFAULT_PLUGIN = Version("1.7.0")
RDMA_BY_DEFAULT_LIBFABRIC = Version("1.18.0")
# NCCL >= 2.19 (every torch since 2.2) raises libfabric errors with EFA installers before 1.29
# unless FI_EFA_SET_CUDA_SYNC_MEMOPS=0 (aws-ofi-nccl #584, doc/efa-env-var.md's p5 preset).
SYNC_MEMOPS_FIXED_INSTALLER = Version("1.29.0")
_RDMA_INSTANCE = re.compile(r"^p([4-9]|\d\d)")  # p4d, p4de, p5, p5e, p5en, p6-b200, ...

DEBUG_FILE_NAME = "rlport-efa-nccl.%h.%p.log"  # NCCL replaces %h (host) and %p (pid)
DEBUG = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET"}


def rdma_instance(instance_type: str) -> bool:
    """Whether the EC2 instance type (DMI product name) has EFA with GPUDirect RDMA."""
    return _RDMA_INSTANCE.match(instance_type) is not None


def version_env(
    plugin_version: Version | None,
    libfabric_version: Version | None,
    instance_type: str,
    installer_version: Version | None = None,
) -> dict[str, str]:
    """The variables the detected versions need (an unknown version counts as current)."""
    env: dict[str, str] = {}
    if installer_version is not None and installer_version < SYNC_MEMOPS_FIXED_INSTALLER:
        env["FI_EFA_SET_CUDA_SYNC_MEMOPS"] = "0"
    old = plugin_version is not None and plugin_version < OLD_PLUGIN
    if old:
        env["FI_PROVIDER"] = "efa"
        env["NCCL_PROTO"] = "simple"
    needs_rdma_switch = (plugin_version is not None and plugin_version < RDMA_BY_DEFAULT_PLUGIN) or (
        libfabric_version is not None and libfabric_version < RDMA_BY_DEFAULT_LIBFABRIC
    )
    if needs_rdma_switch and rdma_instance(instance_type):
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    return env


def names_ofi_plugin(value: str, plugin: OfiPlugin) -> bool:
    """Whether an ``NCCL_NET_PLUGIN`` value loads this aws-ofi-nccl library."""
    base = value.rsplit("/", 1)[-1]
    names = {plugin.net_plugin, f"libnccl-net-{plugin.net_plugin}.so", *plugin.files}
    return bool(value) and (base in names or value == plugin.path)


def debug_env(user: Mapping[str, str], tmpdir: str | None = None) -> dict[str, str]:
    """NCCL's INIT/NET log to a per-process file, for the preflight; the user's own choice wins."""
    env = {k: v for k, v in DEBUG.items() if k not in user}
    if "NCCL_DEBUG_FILE" not in user:
        env["NCCL_DEBUG_FILE"] = f"{(tmpdir or tempfile.gettempdir()).rstrip('/')}/{DEBUG_FILE_NAME}"
    return env


def collectives_env(detection: Detection, user: Mapping[str, str], ifname: str | None) -> dict[str, str]:
    """Everything this plugin exports before the NCCL process group starts (user values omitted)."""
    plugin = detection.plugin
    env = version_env(
        plugin.version if plugin else None,
        detection.libfabric.version,
        detection.instance_type,
        detection.installer_version,
    )
    if plugin is not None:
        # Set only where unset: a user's own LD_LIBRARY_PATH without the folder is a doctor finding.
        env["LD_LIBRARY_PATH"] = plugin.directory
        if plugin.net_plugin and not names_ofi_plugin(user.get("NCCL_NET_PLUGIN", ""), plugin):
            env["NCCL_NET_PLUGIN"] = plugin.net_plugin
    if ifname:
        env["NCCL_SOCKET_IFNAME"] = ifname
    env = {k: v for k, v in env.items() if k not in user or k == "NCCL_NET_PLUGIN"}
    env.update(debug_env(user))
    return env
