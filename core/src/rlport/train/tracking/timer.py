"""Named, timed phases: ``with timed("rollout", timings): ...`` adds the seconds the block took to
``timings["rollout"]`` (entering a name again adds to it), as verl's ``marked_timer`` does. The
step reports each phase as ``time/<name>``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Time the block into ``timings[name]`` (added to what an earlier block of that name took),
    also when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
