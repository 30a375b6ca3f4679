"""Attention: the reference backend and the transformers integration.

``import rlport.attention`` stays light; the torch-backed names load on first use:

- :class:`rlport.attention.sdpa.SdpaBackend` and :func:`rlport.attention.sdpa.backend_for`: the
  reference backend the core answers ``rlport_attention_backend`` with.
- :class:`rlport.attention.sdpa.SdpaKernelBackend`: the same, restricted to named torch SDPA kernels.
- :class:`rlport.attention.flash.FlashAttnBackend`: the contract on the flash-attn interface (any
  library with ``flash_attn_func``/``flash_attn_varlen_func``), for device plugins to return.
- :func:`rlport.attention.transformers_integration.register`: makes ``attn_implementation="rlport"``
  route every transformers attention call through the backend the active plugins resolve.
  ``rlport.init()`` calls it through :mod:`rlport.attention.autoregister` as soon as transformers'
  modeling code is imported, so user code needs no call of its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FlashAttnBackend", "SdpaBackend", "SdpaKernelBackend", "backend_for", "register"]

_LAZY = {
    "FlashAttnBackend": "rlport.attention.flash",
    "SdpaKernelBackend": "rlport.attention.sdpa",
    "SdpaBackend": "rlport.attention.sdpa",
    "backend_for": "rlport.attention.sdpa",
    "register": "rlport.attention.transformers_integration",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlport.attention' has no attribute {name!r}")
