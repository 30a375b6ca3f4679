"""How one update's sequences are cut into micro-batches: by a token budget
(``actor.use_dynamic_bsz``), then spread evenly so every rank runs as many forwards."""

from __future__ import annotations


def token_budget_chunks(lengths: list[int], budget: int) -> list[list[int]]:
    """Micro-batches by token budget (``use_dynamic_bsz``): positions ``0..len(lengths)-1`` in
    order, cut so that each micro-batch, padded to its longest sequence, holds at most ``budget``
    tokens (sequences x longest). A sequence longer than ``budget`` is a micro-batch of its own
    (the configuration refuses a budget below the longest possible sequence)."""
    out: list[list[int]] = []
    chunk: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if chunk and (len(chunk) + 1) * max(longest, n) > budget:
            out.append(chunk)
            chunk, longest = [], 0
        chunk.append(i)
        longest = max(longest, n)
    if chunk:
        out.append(chunk)
    return out


def even_chunks(chunks: list[list[int]], count: int) -> list[list[int]]:
    """``chunks`` (micro-batches of positions, in order) cut further until there are ``count``:
    each time the micro-batch with the most sequences is halved (in place, so the order stays).
    For strategies whose every forward is a collective, so every rank must run as many
    micro-batches; a rank holds as many sequences as the others, so ``count`` (their most
    micro-batches) never exceeds its sequences."""
    out = [list(c) for c in chunks]
    if count > sum(len(c) for c in out):
        raise ValueError(f"cannot cut {sum(len(c) for c in out)} sequences into {count} micro-batches")
    while len(out) < count:
        i = max(range(len(out)), key=lambda k: len(out[k]))
        half = (len(out[i]) + 1) // 2
        out[i : i + 1] = [out[i][:half], out[i][half:]]
    return out
