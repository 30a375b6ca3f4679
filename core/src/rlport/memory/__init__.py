"""Memory: per-platform backends and tag-based sleep/wake built on them."""

from rlport.memory.backends import DeviceModuleMemory, HostMemory, host_mem_info
from rlport.memory.tagged import TaggedMemory

__all__ = ["DeviceModuleMemory", "HostMemory", "TaggedMemory", "host_mem_info"]
