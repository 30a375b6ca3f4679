"""Masked-tensor helpers every algorithm shares: a batch of responses is a ``(rows, width)``
tensor padded with zeros, and ``mask`` is 1 on each response's tokens and 0 after."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def row_sum(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum(-1)


def row_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Each row's mean over its masked entries (0 for a row without any)."""
    return row_sum(values, mask) / mask.sum(-1).clamp_min(1.0)


def masked_max(values: Tensor, mask: Tensor) -> float:
    return float(values.masked_fill(mask <= 0, -math.inf).max().item())


def masked_min(values: Tensor, mask: Tensor) -> float:
    return float(values.masked_fill(mask <= 0, math.inf).min().item())


def masked_share(flags: Tensor, mask: Tensor) -> float:
    return float(masked_mean(flags.to(mask.dtype), mask).item())


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(values - mean) / sqrt(var + eps)`` over the masked entries (unbiased variance), as verl
    whitens GAE advantages over the whole batch."""
    mask = mask.float()
    n = mask.sum()
    if n < 2:
        return (values - masked_mean(values, mask)) * mask
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean).square(), mask) * n / (n - 1)
    return (values - mean) * torch.rsqrt(var + eps)


def pad_rows(rows: Sequence[torch.Tensor | Sequence[float]], width: int) -> torch.Tensor:
    """Rows of different lengths as one zero-padded ``(len(rows), width)`` float tensor."""
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        t = torch.as_tensor(row, dtype=torch.float32).flatten()
        out[i, : t.numel()] = t
    return out


def unpad_rows(matrix: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
    """The inverse of :func:`pad_rows`: each row of a ``(batch, width)`` matrix cut to its
    length, as its own ``(length,)`` tensor."""
    return [matrix[i, :n].clone() for i, n in enumerate(lengths)]


def response_mask(lengths: Sequence[int]) -> torch.Tensor:
    """``(len(lengths), max length)``: 1 on each response's tokens, 0 after."""
    width = max(1, max(lengths, default=1))
    return (torch.arange(width).unsqueeze(0) < torch.tensor(list(lengths)).unsqueeze(1)).float()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
