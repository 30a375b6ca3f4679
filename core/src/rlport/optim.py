"""Optimizer factories: the reference (torch's AdamW on its fastest path for the device) and one for
an optimizer class a device's stack ships, which a plugin names by import path.

Part of the plugin API (a plugin's ``rlport_optimizer`` returns an :class:`OptimizerFactory`, often
from :func:`imported_optimizer`), so it lives in the core: the core never imports ``rlport.train``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def has_fused_adamw(device_type: str) -> bool:
    """Whether torch has a fused AdamW kernel for ``device_type`` (tried on a one-element tensor:
    torch refuses ``fused=True`` at construction where it has none)."""
    try:
        p = torch.zeros(1, device=device_type, requires_grad=True)
        torch.optim.AdamW([p], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


class OptimizerFactory:
    """``factory(params, lr=..., betas=..., weight_decay=...)``: ``cls`` built with the actor's
    settings and the fixed ``options`` (the path, the mode); ``repr`` is ``label``."""

    def __init__(self, cls: Any, *, label: str, options: dict[str, Any] | None = None) -> None:
        self.cls, self.label, self.options = cls, label, dict(options or {})

    def __call__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
    ) -> torch.optim.Optimizer:
        return self.cls(list(params), lr=lr, betas=betas, weight_decay=weight_decay, **self.options)

    def __repr__(self) -> str:
        return self.label


#: devices whose fused AdamW kernel the reference leaves alone: torch's fused host kernel rounds
#: differently from the multi-tensor path, and the seeded CPU demo then ends at reward 0.75 instead of
#: 0.998 (one prompt collapses), so the host keeps the foreach path its results were measured on.
FOREACH_ONLY = ("cpu",)


class AdamWFactory(OptimizerFactory):
    """``torch.optim.AdamW``, fused where an accelerator has the kernel, else (and on the host) the
    foreach (multi-tensor) path."""

    def __init__(self, device_type: str) -> None:
        self.fused = device_type not in FOREACH_ONLY and has_fused_adamw(device_type)
        super().__init__(
            torch.optim.AdamW,
            label="torch AdamW (" + ("fused" if self.fused else "foreach") + ")",
            options={"fused": True} if self.fused else {"foreach": True},
        )


def imported_optimizer(
    target: str, *, requires: tuple[str, ...] = (), options: dict[str, Any] | None = None
) -> OptimizerFactory | None:
    """The factory for ``target`` (``"package.module:Class"``), or ``None`` when its module, or one
    of ``requires`` (compiled extension modules the class loads when constructed), cannot be
    imported: the caller then leaves the optimizer to the reference.

    Its label names the class and the options (``"apex.optimizers.FusedAdam (adam_w_mode=True)"``),
    so the workers' start line says which implementation runs."""
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        for name in requires:
            importlib.import_module(name)
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    shown = ", ".join(f"{k}={v!r}" for k, v in (options or {}).items())
    label = f"{module_name}.{attr}" + (f" ({shown})" if shown else "")
    return OptimizerFactory(cls, label=label, options=options)
