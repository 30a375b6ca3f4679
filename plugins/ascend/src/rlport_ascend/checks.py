"""``rlport doctor`` findings only this plugin can see (the ``rlport_doctor`` hook)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from rlport.errors import ConfigError
from rlport.types import DeviceInfo, Finding
from rlport_ascend import allocator, engine, stack

NOSET = "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"


def env_findings(env: Mapping[str, str]) -> list[Finding]:
    out = []
    if env.get(NOSET, "").strip() not in ("", "0"):
        out.append(
            Finding(
                "ascend",
                f"{NOSET}={env[NOSET]!r}: Ray will not give each worker its own NPU, so every rlport worker "
                "would use npu:0 (rlport's Ray workers rely on Ray setting ASCEND_RT_VISIBLE_DEVICES per worker)",
                f"unset {NOSET}",
            )
        )
    try:
        allocator.expandable_switch(env)
    except ConfigError as exc:
        out.append(Finding("ascend", exc.message, exc.fix))
    return out


def findings(device: DeviceInfo, env: Mapping[str, str] | None = None) -> list[Finding]:
    env = os.environ if env is None else env
    out = env_findings(env)
    pairing = stack.pairing()
    if pairing:
        out.append(pairing)
    out += engine.doctor(device)
    return out
