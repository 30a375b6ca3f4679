"""The peak table names each GPU model by the names NVML and torch report, most specific first."""

from __future__ import annotations

import pytest
from rlport_cuda.peaks import TABLE

from rlport.devices.peaks import match


@pytest.mark.parametrize(
    ("name", "bf16_tflops", "fp32_tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.5, 67.0),
        ("NVIDIA H100 PCIe", 756.5, 51.0),
        ("NVIDIA H100 NVL", 835.5, 60.0),
        ("NVIDIA H200", 989.5, 67.0),
        ("NVIDIA H200 NVL", 835.5, 60.0),
        ("NVIDIA A100-SXM4-80GB", 312.0, 19.5),
        ("NVIDIA A100 80GB PCIe", 312.0, 19.5),
        ("NVIDIA L40S", 366.5, 91.6),
        ("NVIDIA L4", 121.0, 30.3),
        ("NVIDIA A10", 125.0, 31.2),
    ],
)
def test_known_gpus(name: str, bf16_tflops: float, fp32_tflops: float) -> None:
    found = match([name], TABLE)
    assert found["bfloat16"] == pytest.approx(bf16_tflops * 1e12)
    assert found["float16"] == found["bfloat16"]
    assert found["float32"] == pytest.approx(fp32_tflops * 1e12)
    assert found["tfloat32"] < found["bfloat16"]


@pytest.mark.parametrize("name", ["NVIDIA L40", "NVIDIA GeForce RTX 4090", "NVIDIA A10G", "Tesla T4"])
def test_unlisted_gpus_get_no_peak(name: str) -> None:
    assert match([name], TABLE) == {}
