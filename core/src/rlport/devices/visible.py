"""Visible-device variables: which of a machine's devices a process may use.

Every accelerator runtime reads a comma-separated list of device indices or ids from its own
variable (the plugin names it). Unset means every device; set but empty means none. Ray sets the
variable per actor unless ``RAY_EXPERIMENTAL_NOSET_<VARIABLE>`` is set, the convention
:func:`ray_noset_variable` spells.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def parse(value: str | None) -> tuple[str, ...] | None:
    """The entries of a visible-devices value: ``None`` when unset (all devices), ``()`` when set but
    empty (no device), else the stripped comma-separated entries in order."""
    if value is None:
        return None
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def read(variable: str, env: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """:func:`parse` of ``variable`` in ``env`` (default ``os.environ``)."""
    return parse((os.environ if env is None else env).get(variable))


def visible_count(physical: int, entries: tuple[str, ...] | None) -> int:
    """How many of ``physical`` devices a process sees under ``entries`` (from :func:`parse`).

    As the runtimes do, the list is read up to the first entry that does not name a device (an index
    out of range, or a negative one); entries that are not integers (UUIDs, PCI ids) are counted as
    devices, since only the runtime can resolve them."""
    if entries is None:
        return physical
    seen = 0
    for entry in entries:
        if entry.lstrip("-").isdigit() and not 0 <= int(entry) < physical:
            break
        seen += 1
    return seen


def ray_noset_variable(variable: str) -> str:
    """The variable that stops Ray from setting ``variable`` per actor."""
    return f"RAY_EXPERIMENTAL_NOSET_{variable}"


@dataclass(frozen=True)
class Disagreement:
    """Two visible-device variables that are both set to different device lists."""

    first: str
    first_value: str
    second: str
    second_value: str


def disagreements(variables: Iterable[str], env: Mapping[str, str] | None = None) -> list[Disagreement]:
    """Every pair among ``variables`` set in ``env`` to different device lists (compared entry by
    entry, so ``"0,1"`` and ``"0, 1"`` agree)."""
    env = os.environ if env is None else env
    present = [(name, env[name]) for name in variables if name in env]
    out = []
    for i, (first, first_value) in enumerate(present):
        for second, second_value in present[i + 1 :]:
            if parse(first_value) != parse(second_value):
                out.append(Disagreement(first, first_value, second, second_value))
    return out
