"""The caching allocator's configuration variable (``PYTORCH_<DEVICE>_ALLOC_CONF``-style:
``key:value,key:value``) per phase, and the check that a user's value does not break sleep mode.

Expandable segments cut fragmentation in training, where tensor sizes change step to step. A rollout
engine's sleep mode (vLLM's tagged memory pool) needs the default segments and refuses to start
with ``expandable_segments:True``; ``rlport train`` hosts the engine in the training process, so
the training phase gets expandable segments only where no sleep-mode engine can be in that process.
The plugin names the variable; nothing here knows a vendor.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection, Mapping

from rlport.errors import ConfigError
from rlport.types import AllocatorSettings, Finding

EXPANDABLE = "expandable_segments"
PHASES = ("rollout", "training")
#: Modules whose engine has a sleep mode that refuses expandable segments.
SLEEP_ENGINES = ("vllm",)


def parse_conf(value: str) -> dict[str, str]:
    """``"expandable_segments:True,max_split_size_mb:512"`` as a mapping (keys stripped; a key without
    a value maps to ``""``)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, _, val = item.partition(":")
        if key.strip():
            out[key.strip()] = val.strip()
    return out


def expandable(value: str | None) -> bool:
    """True when an allocator configuration turns expandable segments on."""
    return value is not None and parse_conf(value).get(EXPANDABLE, "").lower() in ("true", "1")


def sleep_engine_installed() -> bool:
    """True when a rollout engine with a sleep mode is installed (checked without importing it)."""
    return any(importlib.util.find_spec(name) is not None for name in SLEEP_ENGINES)


def phase_settings(phase: str, variable: str, *, sleep_mode: bool) -> AllocatorSettings:
    """The allocator settings of ``phase``: expandable segments for training unless ``sleep_mode``
    (a sleep-mode engine may share the process), the device's defaults for rollout."""
    if phase not in PHASES:
        raise ConfigError(
            f"allocator phase {phase!r} is not one of {', '.join(PHASES)}",
            "call rlport_allocator_settings with 'rollout' or 'training'",
        )
    if phase == "training" and not sleep_mode:
        return AllocatorSettings(
            env={variable: f"{EXPANDABLE}:True"},
            note="expandable segments: less fragmentation while tensor sizes change step to step",
        )
    why = "rollout" if phase == "rollout" else "a sleep-mode engine (vLLM) may share the training process"
    return AllocatorSettings(note=f"default segments ({why}): sleep mode refuses {EXPANDABLE}:True")


def sleep_conflict(
    variable: str,
    check: str,
    *,
    env: Mapping[str, str] | None = None,
    exported: Collection[str] = (),
) -> Finding | None:
    """A finding when the user exported ``variable`` with expandable segments on (a value rlport
    set itself, listed in ``exported``, is not the user's and is not reported)."""
    env = os.environ if env is None else env
    value = env.get(variable)
    if variable in exported or not expandable(value):
        return None
    kept = ",".join(f"{k}:{v}" for k, v in parse_conf(value or "").items() if k != EXPANDABLE)
    fix = f"export {variable}={kept}" if kept else f"unset {variable}"
    return Finding(
        check,
        f"{variable}={value!r} turns on {EXPANDABLE}, which vLLM sleep mode refuses "
        "(the rollout engine will fail to start with enable_sleep_mode=True)",
        f"{fix}   (rlport sets expandable segments itself for training where sleep mode is not used)",
    )
