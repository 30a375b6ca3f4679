"""simdev: rlport's simulated accelerator, a PyTorch PrivateUse1 backend named ``simdev``.

Importing this package is cheap (the rlport plugin object lives in ``rlport_simdev.plugin``).
``rlport_simdev.register()`` builds the C++ runtime on first use (see ``_build``), names the
PrivateUse1 backend ``simdev``, registers ``torch.simdev`` (the device module) and the ``simdev``
torch.distributed backend. Afterwards ``torch.ones(2, device="simdev")`` works.
"""

from __future__ import annotations

from types import ModuleType

DEVICE_TYPE = "simdev"


def register() -> ModuleType:
    """Build (once), load and register the simdev backend; returns ``torch.simdev``. Idempotent."""
    import torch

    from rlport_simdev import _build

    _build.load()
    if torch._C._get_privateuse1_backend_name() != DEVICE_TYPE:
        torch.utils.rename_privateuse1_backend(DEVICE_TYPE)
    from rlport_simdev import device as device_module

    if getattr(torch, DEVICE_TYPE, None) is not device_module:
        torch._register_device_module(DEVICE_TYPE, device_module)
        torch.utils.generate_methods_for_privateuse1_backend(
            for_tensor=True, for_module=True, for_storage=True
        )
    from rlport_simdev import distributed

    distributed.register()
    return device_module


__all__ = ["DEVICE_TYPE", "register"]
