"""A stand-in for an engine whose weights live in another process, for testing and benchmarking
weight transports without an engine (vLLM's workers are reached the same way).

:class:`ProcessReceiver` starts one spawned process holding preallocated weights of the given
names, shapes and dtypes. Its :meth:`~ProcessReceiver.receive_weights` sends ``(unpack, payload)``
over a pipe; the process calls ``unpack(payload)`` and copies the tensors into its weights, as an
engine worker loads them, and answers with the peak of its own extra anonymous memory while doing
so. :meth:`~ProcessReceiver.digests` returns a sha256 per weight and ends the process.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Iterable
from typing import Any


def digests(named: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """sha256 of each tensor's bytes, by name (equal digests: bit-identical weights)."""
    import torch

    out = {}
    for name, t in named:
        # host-side by design: a digest of the bytes, copied to the host first (never a device pointer)
        data = t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def _serve(conn: Any, shapes: dict[str, tuple[tuple[int, ...], str]]) -> None:
    import torch

    from rlport.memory.peak import HostPeak
    from rlport.rollout.transport import resolve_unpack

    state = {n: torch.zeros(shape, dtype=getattr(torch, dtype)) for n, (shape, dtype) in shapes.items()}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg == "digests":
            conn.send(digests(state.items()))
            return
        unpack, payload = msg
        with HostPeak(include_shared=False) as peak, torch.no_grad():
            for name, tensor in resolve_unpack(unpack)(payload):
                state[name].copy_(tensor)
        conn.send(peak.extra_bytes)


class ProcessReceiver:
    """See the module docstring. ``peak_extra_bytes``: the receiving process's largest extra
    anonymous memory over any one bucket (shared memory is the sender's to count)."""

    def __init__(self, like: Iterable[tuple[str, Any]], timeout: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        self.timeout = timeout
        self._conn, child = ctx.Pipe()
        shapes = {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in like}
        self._proc = ctx.Process(target=_serve, args=(child, shapes), daemon=True)
        self._proc.start()
        self._expect("ready")
        self.payload_bytes: list[int] = []
        self.peak_extra_bytes = 0

    def _expect(self, what: str) -> Any:
        if not self._conn.poll(self.timeout):
            self._proc.kill()
            raise TimeoutError(f"receiver process gave no {what} answer in {self.timeout}s")
        return self._conn.recv()

    def receive_weights(self, unpack: str, payload: Any) -> None:
        self.payload_bytes.append(len(payload))
        self._conn.send((unpack, payload))
        self.peak_extra_bytes = max(self.peak_extra_bytes, int(self._expect("loaded")))

    def digests(self) -> dict[str, str]:
        self._conn.send("digests")
        out = self._expect("digests")
        self._proc.join(self.timeout)
        return out
