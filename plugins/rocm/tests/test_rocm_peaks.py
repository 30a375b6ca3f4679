"""The peak table names each Instinct model by the name torch reports on ROCm."""

from __future__ import annotations

import pytest
from rlport_rocm.peaks import TABLE

from rlport.devices.peaks import match


@pytest.mark.parametrize(
    ("name", "bf16_tflops"),
    [
        ("AMD Instinct MI300X", 1307.4),
        ("AMD Instinct MI325X", 1307.4),
        ("AMD Instinct MI250X", 383.0),
        ("AMD Instinct MI250", 362.1),
    ],
)
def test_known_gpus(name: str, bf16_tflops: float) -> None:
    assert match([name], TABLE)["bfloat16"] == pytest.approx(bf16_tflops * 1e12)


@pytest.mark.parametrize(
    "name",
    ["AMD Instinct MI250X/MI250", "AMD Instinct MI300A", "AMD Instinct MI210", "AMD Radeon RX 7900 XTX", ""],
)
def test_unlisted_gpus_get_no_peak(name: str) -> None:
    assert match([name], TABLE) == {}
