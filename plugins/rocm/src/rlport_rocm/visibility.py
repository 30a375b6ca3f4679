"""Which variables choose the GPUs of a ROCm process, and the combinations that go wrong.

- ``ROCR_VISIBLE_DEVICES`` is applied first, by the ROCm runtime; ``HIP_VISIBLE_DEVICES`` (and
  ``CUDA_VISIBLE_DEVICES``, which HIP also reads) then index into what ROCR left (pytorch PR #142292).
- Ray (2.45 and later) sets ``HIP_VISIBLE_DEVICES`` per worker and refuses ``ROCR_VISIBLE_DEVICES``
  without it; older Ray set ``ROCR_VISIBLE_DEVICES``. ``RAY_EXPERIMENTAL_NOSET_<that variable>`` stops it.
- vLLM on ROCm copies ``HIP_VISIBLE_DEVICES`` into ``CUDA_VISIBLE_DEVICES`` and asserts the two agree
  when both are set.

Each rule below is one :class:`~rlport.types.Finding`, with the command that fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata

from packaging.version import InvalidVersion, Version

from rlport.devices import visible
from rlport.types import Finding

ROCR = "ROCR_VISIBLE_DEVICES"
HIP = "HIP_VISIBLE_DEVICES"
CUDA = "CUDA_VISIBLE_DEVICES"
#: The first Ray release that sets HIP_VISIBLE_DEVICES (not ROCR_VISIBLE_DEVICES) per worker.
RAY_HIP_SINCE = Version("2.45")


def ray_variable(ray_version: str | None = None) -> str:
    """The variable the installed Ray sets per worker on AMD GPUs (HIP when Ray is not installed)."""
    if ray_version is None:
        try:
            ray_version = metadata.version("ray")
        except metadata.PackageNotFoundError:
            return HIP
    try:
        return HIP if Version(ray_version) >= RAY_HIP_SINCE else ROCR
    except InvalidVersion:
        return HIP


def _composed(rocr: tuple[str, ...], inner: tuple[str, ...]) -> str | None:
    """The physical devices ``inner`` (indices into what ROCR left) names, or ``None`` when an entry
    is not an index into it."""
    out = []
    for entry in inner:
        if not entry.isdigit() or int(entry) >= len(rocr):
            return None
        out.append(rocr[int(entry)])
    return ",".join(out)


def findings(env: Mapping[str, str], ray_version: str | None = None) -> list[Finding]:
    """Every visible-devices rule ``env`` breaks."""
    out: list[Finding] = []
    rocr, hip, cuda = env.get(ROCR), env.get(HIP), env.get(CUDA)
    if rocr is not None and hip is None and cuda is None:
        out.append(
            Finding(
                "rocm",
                f"{ROCR}={rocr!r} is set without {HIP}: Ray refuses it and vLLM ignores it",
                f"export {HIP}={rocr}; unset {ROCR}",
            )
        )
    elif rocr is not None:
        inner_name, inner = (HIP, hip) if hip is not None else (CUDA, cuda)
        composed = _composed(visible.parse(rocr) or (), visible.parse(inner) or ())
        target = (
            f"export {HIP}={composed}; " if composed is not None else f"choose the devices in {HIP} only; "
        )
        out.append(
            Finding(
                "rocm",
                f"{ROCR}={rocr!r} and {inner_name}={inner!r} are both set: {inner_name} then indexes into the "
                f"devices {ROCR} left, which Ray and vLLM do not expect",
                f"{target}unset {ROCR}" + (f" {CUDA}" if inner_name == HIP and cuda is not None else ""),
            )
        )
    if hip is not None and cuda is not None and visible.parse(hip) != visible.parse(cuda) and rocr is None:
        out.append(
            Finding(
                "rocm",
                f"{HIP}={hip!r} and {CUDA}={cuda!r} disagree: vLLM asserts they are equal",
                f"unset {CUDA} (vLLM copies {HIP} into it)",
            )
        )
    if cuda is not None and hip is None and rocr is None:
        out.append(
            Finding(
                "rocm",
                f"{CUDA}={cuda!r} is set without {HIP}: Ray sets {HIP} per worker and vLLM then finds the two "
                "disagree",
                f"export {HIP}={cuda}; unset {CUDA}",
            )
        )
    noset = visible.ray_noset_finding(ray_variable(ray_version), "rocm", env)
    if noset is not None:
        out.append(noset)
    return out
