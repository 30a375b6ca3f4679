"""``rlport doctor`` findings only this plugin can see (the ``rlport_doctor`` hook)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

from rlport import settings as core_settings
from rlport.devices import allocator as core_allocator
from rlport.devices.visible import ray_noset_variable
from rlport.errors import ConfigError
from rlport.types import DeviceInfo, Finding
from rlport_ascend import allocator, engine, stack
from rlport_ascend.device import VISIBLE

NOSET = ray_noset_variable(VISIBLE)


def env_findings(env: Mapping[str, str], exported: Collection[str] = ()) -> list[Finding]:
    """Variables that contradict how rlport runs on NPUs."""
    out = []
    if env.get(NOSET, "").strip() not in ("", "0"):
        out.append(
            Finding(
                "ascend",
                f"{NOSET}={env[NOSET]!r}: Ray will not give each worker its own NPU, so every rlport worker "
                f"would use npu:0 (rlport's Ray workers rely on Ray setting {VISIBLE} per worker)",
                f"unset {NOSET}",
            )
        )
    try:
        allocator.expandable_switch(env)
    except ConfigError as exc:
        out.append(Finding("ascend", exc.message, exc.fix))
    if allocator.vllm_ascend_installed():
        conflict = core_allocator.sleep_conflict(allocator.VAR, "ascend", env=env, exported=exported)
        if conflict:
            out.append(conflict)
    return out


def findings(device: DeviceInfo, env: Mapping[str, str] | None = None) -> list[Finding]:
    env = os.environ if env is None else env
    out = env_findings(env, core_settings.exported())
    pairing = stack.pairing()
    if pairing:
        out.append(pairing)
    out += engine.doctor(device)
    return out
