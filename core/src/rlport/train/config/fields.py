"""How a setting is declared: :func:`setting` gives a dataclass field its default, the line of
documentation ``--show-config`` prints and the range (:class:`Bound`) or choices a value must hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Bound:
    """The range of a number setting: ``ge``/``gt`` below, ``le``/``lt`` above; ``why`` is said
    with the error."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""

    def holds(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def text(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            out = f"in {low}, {high}"
        elif self.ge is not None:
            out = f"at least {self.ge:g}"
        elif self.gt is not None:
            out = f"above {self.gt:g}"
        elif self.le is not None:
            out = f"at most {self.le:g}"
        else:
            out = f"below {self.lt:g}"
        return f"{out} ({self.why})" if self.why else out


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] = (),
    why: str = "",
) -> Any:
    """A documented field: ``default`` (or ``factory`` for a list or mapping), ``doc`` (one line,
    printed by ``--show-config``), a numeric range (``ge``/``gt``/``le``/``lt``) or ``choices``,
    and ``why`` the range holds. Checked by :func:`check_ranges`."""
    metadata: dict[str, Any] = {"doc": doc}
    if any(b is not None for b in (ge, gt, le, lt)):
        metadata["range"] = Bound(ge, gt, le, lt, why)
    if choices:
        metadata["choices"] = choices
        metadata["why"] = why
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)
