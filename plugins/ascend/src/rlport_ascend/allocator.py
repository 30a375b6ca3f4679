"""``PYTORCH_NPU_ALLOC_CONF`` per phase: expandable segments for training, off where vllm-ascend's
sleep mode may run.

- training: ``expandable_segments:True`` (less fragmentation while activations come and go);
- rollout: ``expandable_segments:False`` when vllm-ascend is installed, because its sleep-mode
  allocator (``vllm_ascend/device_allocator/camem.py``, ``CaMemAllocator``) asserts expandable segments
  are off (a memory pool and expandable segments do not mix: pytorch/pytorch#147851);
  otherwise the training setting (the Hugging Face engine has no such constraint).

MindSpeed-RL users already switch expandable segments with ``EXPANDABLE_SEGMENTS=True``/``False``;
that switch, when set, decides the training setting. An exported ``PYTORCH_NPU_ALLOC_CONF`` always wins
(the core keeps a user's value). A process that trains and runs vllm-ascend with sleep mode (co-located
workers apply the training setting) cannot have both: :func:`sleep_conflict` says so, and the engine
arguments hook refuses to build such an engine with the fix.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from rlport.errors import ConfigError
from rlport.types import AllocatorSettings

VAR = "PYTORCH_NPU_ALLOC_CONF"
SWITCH = "EXPANDABLE_SEGMENTS"
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def expandable_switch(env: Mapping[str, str]) -> bool | None:
    """The MindSpeed-RL switch ``EXPANDABLE_SEGMENTS``: True, False, or None when unset."""
    raw = env.get(SWITCH)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
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
    vllm_ascend = vllm_ascend_installed() if vllm_ascend is None else vllm_ascend
    switch = expandable_switch(env)
    training = True if switch is None else switch
    why = f"{SWITCH}={env[SWITCH]}" if switch is not None else "default for training"
    if phase == "training":
        return AllocatorSettings({VAR: f"expandable_segments:{training}"}, f"training: {why}")
    if phase == "rollout":
        if vllm_ascend:
            return AllocatorSettings(
                {VAR: "expandable_segments:False"},
                "rollout: vllm-ascend's sleep-mode allocator refuses expandable segments",
            )
        return AllocatorSettings(
            {VAR: f"expandable_segments:{training}"}, f"rollout with no vllm-ascend: {why}"
        )
    raise ConfigError(
        f"allocator phase {phase!r} is not one of 'training', 'rollout'", "ask for one of the two"
    )


def expandable_on(env: Mapping[str, str]) -> bool:
    """Whether ``PYTORCH_NPU_ALLOC_CONF`` in ``env`` turns expandable segments on."""
    for item in env.get(VAR, "").split(","):
        key, _, value = item.partition(":")
        if key.strip() == "expandable_segments" and value.strip().lower() in _TRUE:
            return True
    return False


def sleep_conflict(env: Mapping[str, str]) -> str | None:
    """Why vllm-ascend sleep mode cannot run in a process with ``env``, or ``None``."""
    if expandable_on(env):
        return (
            f"{VAR}={env[VAR]!r} turns expandable segments on, which vllm-ascend's sleep-mode allocator "
            "(CaMemAllocator) refuses"
        )
    return None
