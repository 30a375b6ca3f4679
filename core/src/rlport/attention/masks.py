"""Structural attention masks: bottom-right-aligned causal and sliding-window patterns.

Convention (the one flash-attn and decoding use): with ``q_len`` queries and ``k_len`` keys, query ``i``
sits at key position ``p = i + k_len - q_len``. Causal attention lets it see keys ``j <= p``; a sliding
window of ``w`` tokens further restricts it to ``j > p - w`` (``w`` keys including itself). Without
causality a window is symmetric: ``|j - p| < w``. Query rows that see no key produce zeros.

Masks are boolean (``True`` = attend), shaped ``(q_len, k_len)``, and cached per shape and device in a
small bounded dict, since the same few shapes repeat every layer and every step.
"""

from __future__ import annotations

import torch

_CACHE: dict[tuple[int, int, bool, int | None, torch.device], torch.Tensor] = {}
_CACHE_LIMIT = 64


def structural_mask(
    q_len: int, k_len: int, *, causal: bool, window: int | None, device: torch.device
) -> torch.Tensor:
    """The boolean ``(q_len, k_len)`` mask of the causal/window pattern (``True`` = attend)."""
    key = (q_len, k_len, causal, window, device)
    mask = _CACHE.get(key)
    if mask is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        # Query i sits at key position i + offset (bottom-right alignment).
        offset = k_len - q_len
        pos = torch.arange(q_len, device=device)[:, None] + offset
        keys = torch.arange(k_len, device=device)[None, :]
        if causal:
            mask = keys <= pos
            if window is not None:
                mask &= keys > pos - window
        else:
            mask = (keys - pos).abs() < window if window is not None else torch.ones_like(keys <= pos)
        _CACHE[key] = mask
    return mask


def combine(user_mask: torch.Tensor | None, pattern: torch.Tensor) -> torch.Tensor:
    """Intersect a caller's boolean or additive mask with a boolean ``pattern``.

    A boolean mask is and-ed; an additive (float) mask gets ``-inf`` where the pattern forbids.
    """
    if user_mask is None:
        return pattern
    if user_mask.dtype == torch.bool:
        return user_mask & pattern
    return user_mask.masked_fill(~pattern, float("-inf"))


def clear_cache() -> None:
    """Forget every cached mask (tests, or after moving work to another device)."""
    _CACHE.clear()
