"""Dense peak FLOP/s of NVIDIA data-centre GPUs per compute dtype, from NVIDIA's datasheets.

The datasheets print tensor-core figures "with sparsity"; the dense peaks here are half of those
(the datasheets' footnote: "Shown with sparsity. Specifications are one-half lower without
sparsity"). ``float32`` is the non-tensor FP32 figure (torch's default float32 matmul precision,
"highest"); ``tfloat32`` the TF32 tensor-core figure (``torch.set_float32_matmul_precision("high")``).
Patterns match ``torch.cuda.get_device_name`` / NVML names (``"NVIDIA H100 80GB HBM3"``, ``"NVIDIA
A100-SXM4-80GB"``), most specific first. A GPU not listed gets no peak, so no MFU.
"""

from __future__ import annotations

T = 1e12


def _peaks(bf16: float, tf32: float, fp32: float) -> dict[str, float]:
    return {"bfloat16": bf16 * T, "float16": bf16 * T, "tfloat32": tf32 * T, "float32": fp32 * T}


TABLE = (
    # H200 NVL: NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): BF16 1,671 TFLOPS,
    # TF32 835 TFLOPS (sparse), FP32 60 TFLOPS.
    (r"\bH200 NVL\b", _peaks(835.5, 417.5, 60.0)),
    # H200 SXM: same datasheet: BF16 1,979 TFLOPS, TF32 989 TFLOPS (sparse), FP32 67 TFLOPS.
    (r"\bH200\b", _peaks(989.5, 494.5, 67.0)),
    # H100 NVL: NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): BF16 1,671 TFLOPS,
    # TF32 835 TFLOPS (sparse), FP32 60 TFLOPS.
    (r"\bH100 NVL\b", _peaks(835.5, 417.5, 60.0)),
    # H100 PCIe: same datasheet: BF16 1,513 TFLOPS, TF32 756 TFLOPS (sparse), FP32 51 TFLOPS.
    (r"\bH100 PCIe\b", _peaks(756.5, 378.0, 51.0)),
    # H100 SXM5 ("NVIDIA H100 80GB HBM3"): BF16 1,979 TFLOPS, TF32 989 TFLOPS (sparse), FP32 67.
    (r"\bH100\b", _peaks(989.5, 494.5, 67.0)),
    # A100 (SXM4 and PCIe, 40 and 80 GB): NVIDIA A100 datasheet: BF16 312 TFLOPS, TF32 156
    # TFLOPS (dense), FP32 19.5 TFLOPS.
    (r"\bA100\b", _peaks(312.0, 156.0, 19.5)),
    # L40S: NVIDIA L40S datasheet: BF16 733 TFLOPS, TF32 366 TFLOPS (sparse), FP32 91.6 TFLOPS.
    (r"\bL40S\b", _peaks(366.5, 183.0, 91.6)),
    # L4: NVIDIA L4 datasheet: BF16 242 TFLOPS, TF32 120 TFLOPS (sparse), FP32 30.3 TFLOPS.
    (r"\bL4\b", _peaks(121.0, 60.0, 30.3)),
    # A10: NVIDIA A10 datasheet: BF16 250 TFLOPS, TF32 125 TFLOPS (sparse), FP32 31.2 TFLOPS.
    (r"\bA10\b", _peaks(125.0, 62.5, 31.2)),
)
