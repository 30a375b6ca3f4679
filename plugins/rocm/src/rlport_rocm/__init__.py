"""rlport device plugin for AMD GPUs.

Cheap to import: torch, amdsmi and flash-attn are imported only inside the hooks that need them.
"""

from rlport_rocm.plugin import RocmPlugin

__all__ = ["RocmPlugin", "plugin"]

plugin = RocmPlugin()
