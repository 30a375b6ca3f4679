"""The software stack the plugin is written for, and the torch / torch-npu pairing rule.

torch-npu is built for one torch release: torch-npu ``X.Y.Z[.postN]`` goes with torch ``X.Y.Z``
(Ascend's version table; ``pip install torch==2.13.0 torch-npu==2.13.0``). Versions are read from
the installed distributions' metadata, never by importing torch_npu.
"""

from __future__ import annotations

from importlib import metadata

from packaging.version import InvalidVersion, Version

from rlport.types import Finding, StackRequirement
from rlport_ascend.patches import TRANSFORMERS


def requirements() -> list[StackRequirement]:
    return [
        StackRequirement("torch", ">=2.5", "torch_npu loads through torch's device-backend autoload (2.5+)"),
        StackRequirement("torch-npu", ">=2.5", "the NPU device module, npu_fusion_attention and hccl"),
        StackRequirement("transformers", TRANSFORMERS, "the Qwen2/Qwen3-MoE fused-op patches", optional=True),
        StackRequirement("vllm-ascend", ">=0.9", "vLLM rollout on the NPU", optional=True),
    ]


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pairing_problem(torch: str | None, torch_npu: str | None) -> Finding | None:
    """A finding when torch-npu was not built for the installed torch release."""
    if torch is None or torch_npu is None:
        return None
    try:
        ours, theirs = Version(torch).release[:3], Version(torch_npu).release[:3]
    except InvalidVersion:
        return None
    if ours == theirs:
        return None
    release = ".".join(map(str, theirs))
    return Finding(
        "ascend",
        f"torch {torch} is installed but torch-npu {torch_npu} is built for torch {release}",
        f"pip install 'torch=={release}'   (or the torch-npu release for torch {torch}, per Ascend's version table)",
    )


def pairing() -> Finding | None:
    return pairing_problem(_installed("torch"), _installed("torch-npu"))
