"""What a running case records, and the append-only event log a run writes.

A case gets a :class:`CaseContext` (the ``case`` fixture) and records one or more statuses with
metrics; the worst recorded status is the case's result. The pytest process appends every event
(session facts, case start, case result, performance figure) to a JSON-lines file as it happens, so a
run that crashes mid-case still leaves a log naming the case it crashed in.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import IO, Any

from rlport_conformance.plan import PlannedCase
from rlport_conformance.status import Status, is_allowed, worst
from rlport_conformance.tolerance import Judgement


def clean(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats become strings ("inf", "nan"), tuples lists, other
    objects their ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    try:  # numpy / torch scalars
        return clean(value.item())
    except (AttributeError, ValueError, TypeError):
        return str(value)


class EventLog:
    """Append JSON lines to ``path`` (flushed per event; safe across a later crash)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8") if self.path else None  # noqa: SIM115
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def write(self, event: dict[str, Any]) -> None:
        event = clean(event)
        with self._lock:
            self.events.append(event)
            if self._fh is not None:
                self._fh.write(json.dumps(event, sort_keys=True) + "\n")
                self._fh.flush()
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: Path | str) -> list[dict[str, Any]]:
    """The events of a log; a torn last line (the writer crashed mid-write) is dropped."""
    events = []
    p = Path(path)
    if not p.exists():
        return events
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


class CaseContext:
    """The recording handle of one running case (the ``case`` fixture)."""

    def __init__(self, planned: PlannedCase) -> None:
        self.planned = planned
        self.statuses: list[Status] = []
        self.messages: list[str] = []
        self.metrics: dict[str, Any] = {}

    @property
    def id(self) -> str:
        return self.planned.id

    @property
    def facet(self) -> dict[str, Any]:
        return self.planned.facet

    @property
    def claimed(self) -> bool:
        return self.planned.claimed

    def record(self, status: Status, message: str | None = None, **metrics: Any) -> None:
        """Record a status (several may be recorded; the worst wins) with a message and metrics."""
        self.statuses.append(Status(status))
        if message:
            self.messages.append(message)
        self.metrics.update(metrics)

    def metric(self, **metrics: Any) -> None:
        self.metrics.update(metrics)

    def passed(self, message: str | None = None, **metrics: Any) -> None:
        self.record(Status.PASS, message, **metrics)

    def fail(self, message: str, **metrics: Any) -> None:
        self.record(Status.FAIL, message, **metrics)

    def check(self, ok: bool, message: str, **metrics: Any) -> bool:
        """Record PASS when ``ok``, else FAIL with ``message``; return ``ok``."""
        self.record(Status.PASS if ok else Status.FAIL, None if ok else message, **metrics)
        return ok

    def judge(self, judgement: Judgement, prefix: str = "") -> None:
        """Record a tolerance judgement; metrics get ``prefix`` when several are recorded."""
        metrics = {f"{prefix}{k}": v for k, v in judgement.metrics.items()}
        message = (
            f"{prefix.rstrip('_')}: {judgement.message}"
            if prefix and judgement.message
            else judgement.message
        )
        self.record(judgement.status, message, **metrics)

    def unclaimed_result(self, works: bool, what: str, detail: str = "") -> None:
        """For a probe of an unclaimed capability: working is COMPATIBILITY_WARNING, a typed refusal
        is NOT_SUPPORTED. (Wrong results are judged and recorded as FAIL by the caller.)"""
        if works:
            self.record(Status.COMPATIBILITY_WARNING, f"{what} works but is not claimed{detail}")
        else:
            self.record(Status.NOT_SUPPORTED, f"{what} refused with UnsupportedAttention{detail}")

    @property
    def status(self) -> Status | None:
        return worst(*self.statuses) if self.statuses else None

    @property
    def message(self) -> str | None:
        return "; ".join(self.messages) if self.messages else None

    @property
    def allowed(self) -> bool:
        status = self.status
        return status is not None and is_allowed(status, claimed=self.claimed)


class PerfLog:
    """Performance figures (the ``perf`` fixture); never part of the verdict."""

    def __init__(self, log: EventLog) -> None:
        self.log = log

    def record(self, id: str, value: float, unit: str, kind: str, median_of: int, **extra: Any) -> None:
        self.log.write(
            {
                "event": "perf",
                "id": id,
                "value": value,
                "unit": unit,
                "kind": kind,
                "median_of": median_of,
                **({"extra": extra} if extra else {}),
            }
        )
