"""The fastest correct attention kernel installed for a spec on an NVIDIA GPU, chosen once per spec.

1. FlashAttention-3 (module ``flash_attn_interface``, from the ``flash_attn_3`` build of
   flash-attention's ``hopper/``) on compute capability 9.0;
2. FlashAttention-2 (module ``flash_attn``) on compute capability 8.0 and newer;
3. otherwise, and for every call flash-attn cannot take (a mask, float32), torch SDPA restricted to
   its flash and memory-efficient kernels with the math kernel last (``rlport.attention.choice``).

Both flash-attn generations take fp16/bf16 and head dims up to 256; a spec neither serves goes to SDPA,
and a spec SDPA cannot serve either is ``None``. The translation of rlport's contract is the core's
(:mod:`rlport.attention.flash`).
"""

from __future__ import annotations

from rlport.attention.choice import FlashCandidate
from rlport.attention.choice import choose as choose_among
from rlport.types import AttentionBackend, AttentionSpec

FA3 = FlashCandidate("flash_attn_interface", "flash_attn_3")
FA2 = FlashCandidate("flash_attn", "flash_attn_2")


def candidates(capability: tuple[int, int]) -> list[FlashCandidate]:
    """The flash-attn libraries that run on a GPU of compute ``capability``, best first."""
    out = []
    if capability == (9, 0):
        out.append(FA3)
    if capability >= (8, 0):
        out.append(FA2)
    return out


def choose(spec: AttentionSpec, capability: tuple[int, int]) -> AttentionBackend | None:
    """The backend for ``spec`` on a GPU of compute ``capability``."""
    return choose_among(spec, candidates(capability))
