"""The thresholds of rollout correction (``algorithm.rollout_correction.*``), read from the
strings verl takes, before any work: what :mod:`rlport.train.algos.rollout_correction` applies.

- ``rollout_is_threshold``: ``"2.0"`` truncates the importance weights at 2 (TIS);
  ``"0.5_5.0"`` zeroes the weights outside [0.5, 5] (IcePop).
- ``rollout_rs``: comma-separated rejection criteria (:data:`RS_OPTIONS`), all of which a token
  (or its sequence) must pass; ``rollout_rs_threshold``: one threshold for all of them, or one
  per criterion, comma-separated. A ``*_k1`` criterion (on ``-log r``) takes ratio bounds
  ``lower_upper`` (one number ``u``: ``1/u`` to ``u``); the others (k2, k3 divergences) one
  upper bound.

Pure Python (no torch), so the configuration checks them up front; a bad value raises
:class:`ValueError` saying what is expected, which the configuration reports with the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: the rejection criteria: the statistic (k1 ``-log r``, k2 ``(log r)^2 / 2``, k3 ``r - 1 - log r``)
#: on each token, or its sum, mean or maximum over the sequence
RS_OPTIONS = (
    "token_k1",
    "token_k2",
    "token_k3",
    "seq_sum_k1",
    "seq_sum_k2",
    "seq_sum_k3",
    "seq_mean_k1",
    "seq_mean_k2",
    "seq_mean_k3",
    "seq_max_k2",
    "seq_max_k3",
)


@dataclass(frozen=True)
class IsThreshold:
    """The importance weights' bound: ``upper`` alone truncates (TIS); with ``lower``, weights
    outside [lower, upper] become 0 (IcePop)."""

    upper: float
    lower: float | None = None


@dataclass(frozen=True)
class RsCheck:
    """One rejection criterion: its ``option`` (of :data:`RS_OPTIONS`) and bounds. For k1,
    ``lower`` and ``upper`` bound a ratio (the statistic is compared with their logs); for k2
    and k3, ``upper`` bounds the divergence and ``lower`` is None."""

    option: str
    upper: float
    lower: float | None = None


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{what} {text!r} must be a number above 0")
    return value


def is_threshold(spec: str | float) -> IsThreshold:
    """``spec`` as verl's ``rollout_is_threshold``: a number above 0, or ``lower_upper`` with
    ``0 < lower <= upper``."""
    text = str(spec).strip()
    if not text:
        raise ValueError("the threshold is empty")
    if "_" not in text:
        return IsThreshold(_number(text, "the upper bound"))
    low, high = text.split("_", 1)
    lower, upper = _number(low, "the lower bound"), _number(high, "the upper bound")
    if lower > upper:
        raise ValueError(f"the lower bound {lower:g} is above the upper bound {upper:g}")
    return IsThreshold(upper, lower)


def rs_options(spec: str) -> tuple[str, ...]:
    """The criteria of ``rollout_rs`` (comma-separated), in order, each once."""
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ValueError("no criterion is named")
    unknown = [n for n in names if n not in RS_OPTIONS]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not one of {', '.join(RS_OPTIONS)}")
    return tuple(dict.fromkeys(names))


def rs_checks(options: str, spec: str | float | None) -> tuple[RsCheck, ...]:
    """The criteria ``options`` (verl's ``rollout_rs``) with their bounds from ``spec`` (verl's
    ``rollout_rs_threshold``): one entry for all, or one per criterion."""
    names = rs_options(options)
    if spec is None:
        raise ValueError("rejection needs a threshold (rollout_rs_threshold)")
    entries = [part.strip() for part in str(spec).split(",") if part.strip()]
    if len(entries) not in (1, len(names)):
        raise ValueError(
            f"{len(entries)} thresholds for {len(names)} criteria: give one for all, or one per criterion"
        )
    if len(entries) == 1:
        entries = entries * len(names)
    out = []
    for name, entry in zip(names, entries, strict=True):
        if name.endswith("k1"):
            low, high = entry.split("_", 1) if "_" in entry else ("", entry)
            upper = _number(high, f"{name}'s upper ratio bound")
            lower = _number(low, f"{name}'s lower ratio bound") if low else 1.0 / upper
            if lower > upper:
                raise ValueError(f"{name}'s lower bound {lower:g} is above its upper bound {upper:g}")
            out.append(RsCheck(name, upper, lower))
        elif "_" in entry:
            raise ValueError(f"{name} takes one upper bound, not a range ({entry!r})")
        else:
            out.append(RsCheck(name, _number(entry, f"{name}'s upper bound")))
    return tuple(out)
