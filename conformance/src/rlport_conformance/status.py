"""Result categories, after the Khronos CTS, and which of them a conformant run may contain."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """What happened to one case. The string value is what reports carry."""

    PASS = "PASS"
    FAIL = "FAIL"
    NOT_SUPPORTED = "NOT_SUPPORTED"
    QUALITY_WARNING = "QUALITY_WARNING"
    COMPATIBILITY_WARNING = "COMPATIBILITY_WARNING"
    WAIVED = "WAIVED"
    CRASH = "CRASH"
    TIMEOUT = "TIMEOUT"
    RESOURCE_ERROR = "RESOURCE_ERROR"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    MISSING = "MISSING"

    def __str__(self) -> str:
        return self.value


#: Allowed for every must-pass case.
ALWAYS_ALLOWED: frozenset[Status] = frozenset(
    {Status.PASS, Status.QUALITY_WARNING, Status.COMPATIBILITY_WARNING, Status.WAIVED}
)

#: Statuses that count as failed (the "failed" column of the human table).
FAILED: frozenset[Status] = frozenset(
    {Status.FAIL, Status.CRASH, Status.TIMEOUT, Status.RESOURCE_ERROR, Status.INTERNAL_ERROR}
)

#: How bad a status is when one case records several (the worst wins).
_SEVERITY: dict[Status, int] = {
    Status.PASS: 0,
    Status.COMPATIBILITY_WARNING: 1,
    Status.QUALITY_WARNING: 2,
    Status.NOT_SUPPORTED: 3,
    Status.WAIVED: 4,
    Status.FAIL: 5,
    Status.RESOURCE_ERROR: 6,
    Status.TIMEOUT: 7,
    Status.CRASH: 8,
    Status.INTERNAL_ERROR: 9,
    Status.MISSING: 10,
}

VALID: frozenset[str] = frozenset(s.value for s in Status)


def is_allowed(status: Status | str, *, claimed: bool) -> bool:
    """Whether ``status`` is allowed in a conformant run for a case whose capability the plugin
    ``claimed``. NOT_SUPPORTED is allowed only where the plugin declared the capability absent."""
    status = Status(status)
    if status in ALWAYS_ALLOWED:
        return True
    return status is Status.NOT_SUPPORTED and not claimed


def worst(*statuses: Status) -> Status:
    """The most severe of ``statuses`` (PASS when none)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.PASS)
