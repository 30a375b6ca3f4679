"""Choosing, once per spec, between flash-attn libraries and torch SDPA with named kernels.

A device plugin lists the flash-attn libraries that run on its device, best first
(:class:`FlashCandidate`: the module and what it lacks); :func:`choose` returns the first installed one
that serves the spec, with an SDPA fallback for the calls flash-attn cannot take, or that SDPA backend
alone. Libraries are found with :func:`importlib.util.find_spec` and imported only when chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from rlport.types import AttentionBackend, AttentionSpec

#: torch SDPA kernels, fastest first, with the math kernel last so every call is served: the flash
#: kernel takes only fp16/bf16, the memory-efficient one also float32 and masks. cuDNN's kernel is
#: left out (vLLM leaves it out too).
SDPA_HALF = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
SDPA_FLOAT = ("EFFICIENT_ATTENTION", "MATH")


@dataclass(frozen=True)
class FlashCandidate:
    """A flash-attn library: its ``module``, the ``name`` its backend reports, and whether it has
    sliding windows."""

    module: str
    name: str
    window: bool = True


def choose(spec: AttentionSpec, candidates: Iterable[FlashCandidate]) -> AttentionBackend | None:
    """The backend for ``spec``: the first installed candidate that serves it, else SDPA with named
    kernels; ``None`` when SDPA cannot serve it either (attention dropout, heads not a multiple of kv
    heads, a dtype that is not floating, a bad window)."""
    from rlport.attention import flash
    from rlport.attention.sdpa import SdpaKernelBackend, backend_for

    if backend_for(spec) is None:
        return None
    kernels = SDPA_HALF if spec.dtype in flash.FLASH_DTYPES else SDPA_FLOAT
    sdpa = SdpaKernelBackend(kernels, window=spec.window)
    for candidate in candidates:
        if (
            flash.serves(spec, window=candidate.window)
            and importlib.util.find_spec(candidate.module) is not None
        ):
            module = importlib.import_module(candidate.module)
            return flash.FlashAttnBackend(module, name=candidate.name, window=spec.window, fallback=sdpa)
    return sdpa
