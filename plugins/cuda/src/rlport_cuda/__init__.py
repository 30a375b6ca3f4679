"""rlport device plugin for NVIDIA GPUs.

Cheap to import: torch, NVML and flash-attn are imported only inside the hooks that need them.
"""

from rlport_cuda.plugin import CudaPlugin

__all__ = ["CudaPlugin", "plugin"]

plugin = CudaPlugin()
