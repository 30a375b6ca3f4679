"""Peak extra host memory over a block of code, for benchmarks and memory-bound tests (Linux).

What is counted: this process's anonymous resident memory (``RssAnon`` in ``/proc/self/status``:
heap, torch's host tensors) plus the machine's shared memory (``Shmem`` in ``/proc/meminfo``: files
in ``/dev/shm`` and shared-memory segments, counted once however many processes map them). A file
in ``/dev/shm`` and a tensor shared with another process are therefore both seen; a page mapped
from a tmpfs file is not counted twice. ``Shmem`` is machine-wide, so another program creating or deleting
shared memory at the same time moves the figure (measure on a quiet machine, and more than once).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

_STATUS = Path("/proc/self/status")
_MEMINFO = Path("/proc/meminfo")


def _kib(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def host_bytes(include_shared: bool = True) -> int:
    """This process's anonymous resident bytes plus (by default) the machine's shared-memory bytes."""
    anon = _kib(_STATUS.read_text(), "RssAnon")
    return anon + _kib(_MEMINFO.read_text(), "Shmem") if include_shared else anon


class HostPeak:
    """``with HostPeak() as peak: ...`` then ``peak.extra_bytes``: the highest :func:`host_bytes`
    seen while the block ran (sampled every ``interval`` seconds by a thread, and at exit), minus
    its value at entry. ``include_shared=False`` counts this process's anonymous memory only."""

    def __init__(self, interval: float = 0.0005, include_shared: bool = True) -> None:
        self.interval = interval
        self.include_shared = include_shared
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        return _STATUS.is_file() and _MEMINFO.is_file()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, host_bytes(self.include_shared))
            time.sleep(self.interval)

    def __enter__(self) -> HostPeak:
        self.base = self.peak = host_bytes(self.include_shared)
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, host_bytes(self.include_shared))

    @property
    def extra_bytes(self) -> int:
        return max(0, self.peak - self.base)
