"""Dense peak FLOP/s of AMD Instinct GPUs per compute dtype, from AMD's product pages.

``float32`` is the FP32 matrix-core figure (rocBLAS runs float32 GEMMs on the matrix cores). AMD
prints dense figures and, for MI300-class parts, separate ones "with structured sparsity"; the
dense ones are used. Patterns match ``torch.cuda.get_device_name`` on ROCm (``"AMD Instinct
MI300X"``), most specific first. A GPU not listed gets no peak, so no MFU.
"""

from __future__ import annotations

T = 1e12


def _peaks(bf16: float, fp32: float) -> dict[str, float]:
    return {"bfloat16": bf16 * T, "float16": bf16 * T, "float32": fp32 * T}


TABLE = (
    # MI325X: amd.com/en/products/accelerators/instinct/mi300/mi325x.html: BF16/FP16 1307.4
    # TFLOPS, FP32 matrix 163.4 TFLOPS.
    (r"\bMI325X\b", _peaks(1307.4, 163.4)),
    # MI300X: amd.com/en/products/accelerators/instinct/mi300/mi300x.html: BF16/FP16 1307.4
    # TFLOPS, FP32 matrix 163.4 TFLOPS.
    (r"\bMI300X\b", _peaks(1307.4, 163.4)),
    # MI250X: amd.com/en/products/accelerators/instinct/mi200/mi250x.html: BF16/FP16 383 TFLOPS,
    # FP32 matrix 95.7 TFLOPS.
    # "AMD Instinct MI250X/MI250" (one name for both parts, as some ROCm releases report them)
    # matches neither row: the two differ, so no peak rather than a guess.
    (r"\bMI250X\b(?!/)", _peaks(383.0, 95.7)),
    # MI250: amd.com/en/products/accelerators/instinct/mi200/mi250.html: BF16/FP16 362.1 TFLOPS,
    # FP32 matrix 90.5 TFLOPS.
    (r"(?<!/)\bMI250\b", _peaks(362.1, 90.5)),
)
