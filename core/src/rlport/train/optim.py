"""The reference optimizer: torch's AdamW on its fastest path for the device."""

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


class AdamWFactory:
    """``factory(params, lr=..., betas=..., weight_decay=...)``: ``torch.optim.AdamW``, fused
    where the device has the kernel, else the foreach (multi-tensor) path."""

    def __init__(self, device_type: str) -> None:
        self.fused = has_fused_adamw(device_type)
        self.name = "torch AdamW (" + ("fused" if self.fused else "foreach") + ")"

    def __call__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
    ) -> torch.optim.Optimizer:
        path: dict[str, Any] = {"fused": True} if self.fused else {"foreach": True}
        return torch.optim.AdamW(list(params), lr=lr, betas=betas, weight_decay=weight_decay, **path)

    def __repr__(self) -> str:
        return self.name
