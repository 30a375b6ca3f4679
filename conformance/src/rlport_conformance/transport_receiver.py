"""The receiving side of the ``weights.transport`` cases: a spawned process standing for an engine's
worker. For each ``(unpack, payload)`` it receives it calls the function ``unpack`` names on
``payload`` (as ``WorkerWeightsEngine.receive_weights`` does) and replies with, per tensor, its
name, ``(dtype, shape, sha256)`` and byte count; a string reply is an error. ``None`` ends it."""

from __future__ import annotations

import traceback
from typing import Any


def main(conn: Any) -> None:
    from rlport.rollout.transport import resolve_unpack
    from rlport_conformance.cases.test_weights import digest

    while True:
        message = conn.recv()
        if message is None:
            return
        unpack, payload = message
        try:
            pairs = resolve_unpack(unpack)(payload)
            conn.send([(n, digest(t), int(t.numel()) * int(t.element_size())) for n, t in pairs])
        except Exception:
            conn.send(traceback.format_exc())
