"""A device's published peak FLOP/s, looked up by its model name in a plugin's table.

A table is a sequence of ``(pattern, {dtype: FLOP/s})`` rows, most specific first; a pattern is a
regular expression searched (case-insensitively) in the device name the device module reports
(``torch.cuda.get_device_name``). The peaks apply only when every visible device matches the same
row: a process that sees two models gets none, since its MFU would have no single denominator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

PeakTable = Sequence[tuple[str, Mapping[str, float]]]


def row_for(name: str, table: PeakTable) -> int | None:
    """The index of the first row whose pattern matches ``name``, or ``None``."""
    for i, (pattern, _peaks) in enumerate(table):
        if re.search(pattern, name, flags=re.IGNORECASE):
            return i
    return None


def match(names: Sequence[str], table: PeakTable) -> dict[str, float]:
    """The peaks for devices ``names`` (all of one model), or ``{}`` when unknown or mixed."""
    rows = {row_for(n, table) for n in names}
    if len(rows) != 1 or None in rows:
        return {}
    (index,) = rows
    return dict(table[index][1])  # type: ignore[index]
