"""vLLM on Ascend: the engine arguments vllm-ascend needs, and a check that vLLM's own platform is the
NPU rlport runs on.

vllm-ascend registers itself as a vLLM platform plugin (``vllm.platform_plugins: ascend =
vllm_ascend:register``); its ``NPUPlatform`` has ``device_type = "npu"``, ``ray_device_key = "NPU"`` and
``device_control_env_var = "ASCEND_RT_VISIBLE_DEVICES"`` (vllm_ascend/platform.py). If vLLM resolved
another platform (vllm-ascend not installed, ``VLLM_PLUGINS`` excluding it, a CPU vLLM build), the
engine would run somewhere rlport did not plan for: that is refused here with the fix.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import Any

from rlport.errors import EngineError
from rlport.types import DeviceInfo, Finding
from rlport_ascend import allocator

SLEEP_EXTENSION = "vllm_ascend.vllm_ascend_C"  # the C extension CaMemAllocator needs for sleep mode


def vllm_platform() -> tuple[str, str]:
    """vLLM's resolved platform: ``(device_type, class name)``. Imports vLLM."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type), type(current_platform).__name__


def platform_problem(
    device: DeviceInfo, resolve: Callable[[], tuple[str, str]] = vllm_platform
) -> str | None:
    """Why vLLM's ``current_platform`` disagrees with the active rlport device, or ``None``."""
    device_type, name = resolve()
    if device_type == device.device_type:
        return None
    return (
        f"vLLM's current_platform is {name} (device_type {device_type!r}) but the active rlport device plugin "
        f"runs on {device.device_type!r}"
    )


PLATFORM_FIX = (
    "pip install vllm-ascend (built for your vLLM, see its install guide) and make sure VLLM_PLUGINS, "
    "if set, includes 'ascend'"
)


def engine_args(
    engine: str,
    args: Mapping[str, Any],
    device: DeviceInfo,
    *,
    env: Mapping[str, str] | None = None,
    resolve: Callable[[], tuple[str, str]] = vllm_platform,
    has_module: Callable[[str], bool] = lambda name: importlib.util.find_spec(name) is not None,
) -> dict[str, Any] | None:
    """Updates to vLLM's construction arguments on an NPU, after checking the engine can run here."""
    if engine != "vllm":
        return None
    problem = platform_problem(device, resolve)
    if problem:
        raise EngineError(problem, PLATFORM_FIX)
    if args.get("enable_sleep_mode"):
        env = os.environ if env is None else env
        conflict = allocator.sleep_conflict(env)
        if conflict:
            raise EngineError(
                f"vllm engine with enable_sleep_mode=True: {conflict}",
                f"export {allocator.VAR}=expandable_segments:False (or {allocator.SWITCH}=False) before "
                "starting, or drop enable_sleep_mode",
            )
        if not has_module(SLEEP_EXTENSION):
            raise EngineError(
                f"vllm engine with enable_sleep_mode=True needs vllm-ascend's C extension {SLEEP_EXTENSION}, "
                "which is not built",
                "reinstall vllm-ascend from source as its installation guide says, so that vllm_ascend_C is built, "
                "or drop enable_sleep_mode",
            )
    return None


def doctor(device: DeviceInfo, resolve: Callable[[], tuple[str, str]] = vllm_platform) -> list[Finding]:
    """The platform check as a doctor finding, when vLLM is installed."""
    if importlib.util.find_spec("vllm") is None:
        return []
    try:
        problem = platform_problem(device, resolve)
    except Exception as exc:  # vLLM's platform detection raised: that is the finding
        problem = f"vLLM's current_platform cannot be resolved: {type(exc).__name__}: {exc}"
    return [Finding("ascend", problem, PLATFORM_FIX)] if problem else []
