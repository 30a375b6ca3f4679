"""simdev: rlport's simulated accelerator, a PyTorch PrivateUse1 backend named ``simdev``.

``import rlport_simdev`` builds the C++ runtime on first use (see ``_build``), names the
PrivateUse1 backend ``simdev``, registers ``torch.simdev`` (the device module) and the
``simdev`` torch.distributed backend. Afterwards ``torch.ones(2, device="simdev")`` works.
"""

from __future__ import annotations

import torch

from rlport_simdev import _build

DEVICE_TYPE = "simdev"

_C = _build.load()

if torch._C._get_privateuse1_backend_name() != DEVICE_TYPE:
    torch.utils.rename_privateuse1_backend(DEVICE_TYPE)

from rlport_simdev import device as device_module  # noqa: E402

torch._register_device_module(DEVICE_TYPE, device_module)
torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True)

from rlport_simdev import distributed  # noqa: E402

distributed.register()

__all__ = ["DEVICE_TYPE", "device_module", "distributed"]
