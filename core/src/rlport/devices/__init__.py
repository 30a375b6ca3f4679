"""Helpers every device plugin built on a torch device module shares, parameterised by that module's
name (``"torch.cuda"``, ``"torch.npu"``, ...) and by the variable names a plugin passes in, never by
vendor.

``import rlport.devices`` stays light: nothing here imports torch at module level, and
:mod:`rlport.devices.torch_build` reads the installed torch's build metadata without importing it.

- :mod:`rlport.devices.torch_build`: which torch is installed and what it was built for.
- :mod:`rlport.devices.visible`: visible-device variables (parse, count, compare, Ray's ``NOSET``).
- :mod:`rlport.devices.module_info`: a :class:`~rlport.types.DeviceInfo` filled from a device module.
- :mod:`rlport.devices.allocator`: the caching allocator's ``*_ALLOC_CONF`` per phase, and the doctor
  check for a user-exported value that a later phase cannot run with.
"""
