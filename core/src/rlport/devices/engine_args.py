"""vLLM's construction arguments on an accelerator that shares the device with the trainer.

``rlport train`` co-locates the actor and the engine on one device, so the engine may take only part
of its memory (``gpu_memory_utilization``, vLLM's name on every device type) and should sleep while
the actor trains, where the platform has a sleep mode. The plugin says which sleep levels its
platform really has; nothing here knows a vendor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlport.errors import EngineError

#: The share of device memory the engine takes when the config names none: half, leaving the rest to
#: the co-located actor, its optimizer state and activations.
DEFAULT_UTILIZATION = 0.5


def vllm_args(
    args: Mapping[str, Any],
    *,
    sleep_levels: tuple[int, ...],
    platform: str,
    default_utilization: float = DEFAULT_UTILIZATION,
) -> dict[str, Any]:
    """The updates to vLLM's arguments ``args`` (the config's ``rollout.options``) for a platform with
    ``sleep_levels`` (empty: no sleep mode). The config's own values win where they are valid; an
    invalid one is an :class:`~rlport.errors.EngineError` naming it."""
    updates: dict[str, Any] = {}
    utilization = args.get("gpu_memory_utilization")
    if utilization is None:
        updates["gpu_memory_utilization"] = default_utilization
    elif (
        isinstance(utilization, bool) or not isinstance(utilization, int | float) or not 0 < utilization <= 1
    ):
        raise EngineError(
            f"rollout.options.gpu_memory_utilization={utilization!r} must be a fraction in (0, 1]",
            f"set rollout.options.gpu_memory_utilization={default_utilization}",
        )
    sleep = args.get("enable_sleep_mode")
    if not sleep_levels:
        if sleep:
            raise EngineError(
                f"rollout.options.enable_sleep_mode=true, but vLLM has no sleep mode on {platform}",
                "drop rollout.options.enable_sleep_mode (the engine then stays awake during training)",
            )
        updates["enable_sleep_mode"] = False
        return updates
    if sleep is None:
        updates["enable_sleep_mode"] = True
    level = args.get("sleep_level", 1)
    if (sleep or sleep is None) and level not in sleep_levels:
        raise EngineError(
            f"rollout.options.sleep_level={level!r} is not a sleep level of vLLM on {platform} "
            f"(levels: {', '.join(map(str, sleep_levels))})",
            f"set rollout.options.sleep_level={sleep_levels[0]}",
        )
    return updates
