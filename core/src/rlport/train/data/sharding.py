"""How a batch is split over the data-parallel workers: contiguous, as even as it can be."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def shards(items: list[T], parts: int) -> list[list[T]]:
    """``items`` in ``parts`` contiguous pieces whose sizes differ by at most one (the first
    ``len(items) % parts`` pieces take one more)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
