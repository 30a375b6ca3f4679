"""``PYTORCH_NPU_ALLOC_CONF`` per phase, on the core's allocator helpers (:mod:`rlport.devices.allocator`).

- training: ``expandable_segments:True``, unless vllm-ascend is installed: rlport's workers host the
  rollout engine in the training process, and vllm-ascend's sleep-mode allocator
  (``vllm_ascend/device_allocator/camem.py``, ``CaMemAllocator``) asserts expandable segments are off
  (a memory pool and expandable segments do not mix: pytorch/pytorch#147851);
- rollout: the device's defaults (expandable segments off).

MindSpeed-RL users switch expandable segments with ``EXPANDABLE_SEGMENTS=True``/``False``; when set, that
switch decides the training setting (``True`` with vllm-ascend sleep mode in the same process is refused
when the engine is built, with the fix). An exported ``PYTORCH_NPU_ALLOC_CONF`` always wins (the core keeps
a user's value) and ``rlport doctor`` reports one that sleep mode cannot run with.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from rlport.devices.allocator import EXPANDABLE, expandable, phase_settings
from rlport.errors import ConfigError
from rlport.types import AllocatorSettings

VAR = "PYTORCH_NPU_ALLOC_CONF"
SWITCH = "EXPANDABLE_SEGMENTS"
_TRUE, _FALSE = frozenset({"1", "true"}), frozenset({"0", "false"})


def expandable_switch(env: Mapping[str, str]) -> bool | None:
    """The MindSpeed-RL switch ``EXPANDABLE_SEGMENTS``: True, False, or None when unset."""
    raw = env.get(SWITCH)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ConfigError(
        f"{SWITCH}={raw!r} is not a boolean; expected True or False",
        f"export {SWITCH}=True   (or False, or unset it)",
    )


def vllm_ascend_installed() -> bool:
    return importlib.util.find_spec("vllm_ascend") is not None


def settings(
    phase: str, env: Mapping[str, str] | None = None, vllm_ascend: bool | None = None
) -> AllocatorSettings:
    """The allocator environment for ``phase`` (``"training"`` or ``"rollout"``)."""
    env = os.environ if env is None else env
    sleep_mode = vllm_ascend_installed() if vllm_ascend is None else vllm_ascend
    base = phase_settings(phase, VAR, sleep_mode=sleep_mode)
    switch = expandable_switch(env)
    if phase != "training" or switch is None:
        return base
    return AllocatorSettings(
        {VAR: f"{EXPANDABLE}:{switch}"}, f"{SWITCH}={env[SWITCH]} (MindSpeed-RL's switch)"
    )


def sleep_conflict(env: Mapping[str, str]) -> str | None:
    """Why vllm-ascend sleep mode cannot run in a process with ``env``, or ``None``."""
    if expandable(env.get(VAR)):
        return f"{VAR}={env[VAR]!r} turns {EXPANDABLE} on, which vllm-ascend's sleep-mode allocator refuses"
    return None
