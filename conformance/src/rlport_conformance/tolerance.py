"""The flash-attention tolerance rule, as one function with no per-case constants.

Both errors are measured against the same high-precision (float64) reference:
``err_plugin <= k * err_torch + floor``, where ``err_torch`` is what plain PyTorch makes in the same
dtype, ``k`` is 2 for forward results, and ``floor`` is a few units of rounding of the reference
itself into the dtype (flash-attention's ``out_ref + 0.3 - 0.3`` trick), so exact-ish float32 paths
are not failed for being a rounding step apart. Above 1x the bound the result is a QUALITY_WARNING.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rlport_conformance.status import Status

FORWARD_K = 2.0
GRADIENT_K = 3.0
#: How many rounding steps of the reference the floor allows.
FLOOR_STEPS = 4.0


@dataclass(frozen=True)
class Judgement:
    status: Status
    metrics: dict[str, float]
    message: str | None


def judge(error: float, reference_error: float, rounding: float, *, k: float = FORWARD_K) -> Judgement:
    """Judge ``error`` (plugin vs reference) against ``reference_error`` (plain torch in the same
    dtype vs reference) and ``rounding`` (the reference rounded into the dtype vs itself)."""
    floor = FLOOR_STEPS * rounding
    bound = k * reference_error + floor
    quality = reference_error + floor
    ratio = error / reference_error if reference_error > 0 else (0.0 if error == 0 else math.inf)
    metrics = {
        "error": error,
        "reference_error": reference_error,
        "ratio": ratio,
        "bound": bound,
        "floor": floor,
    }
    if not math.isfinite(error) or error > bound:
        return Judgement(
            Status.FAIL,
            metrics,
            f"max error {error:.3g} exceeds {k:g} x torch's {reference_error:.3g} + floor {floor:.3g} = {bound:.3g}",
        )
    if error > quality:
        return Judgement(
            Status.QUALITY_WARNING,
            metrics,
            f"max error {error:.3g} is within the bound {bound:.3g} but above torch's own {quality:.3g}",
        )
    return Judgement(Status.PASS, metrics, None)
