"""The fastest correct attention kernel installed for a spec on an AMD GPU, chosen once per spec.

1. flash-attn's ROCm build (module ``flash_attn``): its composable-kernel backend by default (fp16/bf16,
   head dims up to 256, MI200/MI300/MI350-class GPUs: gfx90a, gfx942, gfx950), or its Triton backend
   when built and run with ``FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE`` (the same interface; its README
   says sliding windows are not done there yet, so a windowed spec goes to SDPA);
2. otherwise, and for every call flash-attn cannot take (a mask, float32), torch SDPA restricted to
   its flash (AOTriton) and memory-efficient kernels with the math kernel last
   (``rlport.attention.choice``).

The translation of rlport's contract is the core's (:mod:`rlport.attention.flash`); a spec SDPA cannot
serve either is ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rlport.attention.choice import FlashCandidate
from rlport.attention.choice import choose as choose_among
from rlport.types import AttentionBackend, AttentionSpec

#: The architectures flash-attn's composable-kernel backend is built for (its README: MI200x, MI250x,
#: MI300x, MI355x); RDNA 3/4 builds exist too but are not claimed here.
CK_ARCHS = ("gfx90a", "gfx942", "gfx950")
TRITON_SWITCH = "FLASH_ATTENTION_TRITON_AMD_ENABLE"
CK = FlashCandidate("flash_attn", "flash_attn_2_ck")
TRITON = FlashCandidate("flash_attn", "flash_attn_2_triton", window=False)


def triton_backend(env: Mapping[str, str] | None = None) -> bool:
    """True when flash-attn runs its Triton backend (the switch is read by flash-attn itself)."""
    return (os.environ if env is None else env).get(TRITON_SWITCH, "").upper() == "TRUE"


def candidates(arch: str, env: Mapping[str, str] | None = None) -> list[FlashCandidate]:
    """The flash-attn builds that run on a GPU of architecture ``arch`` (``"gfx942"``)."""
    if triton_backend(env):
        return [TRITON]
    return [CK] if arch in CK_ARCHS else []


def choose(spec: AttentionSpec, arch: str, env: Mapping[str, str] | None = None) -> AttentionBackend | None:
    """The backend for ``spec`` on a GPU of architecture ``arch``."""
    return choose_among(spec, candidates(arch, env))
