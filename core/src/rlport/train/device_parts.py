"""What the active plugins change in training, resolved once per process through the training
hooks: the strategies the device cannot run (checked by the driver before any work), what runs
before the model is built, and the optimizer implementation."""

from __future__ import annotations

from typing import Any

from rlport.errors import ConfigError
from rlport.train.strategies import BUILT, KNOWN


def check_strategy(strategy: str, rt: Any) -> None:
    """Refuse ``actor.strategy`` values that cannot run here, before any model is loaded."""
    if strategy not in KNOWN:
        raise ConfigError(
            f"config key 'actor.strategy' is {strategy!r}; expected one of {', '.join(KNOWN)}",
            "rlport train actor.strategy=fsdp",
        )
    hit = rt.resolve("rlport_unsupported_strategies", device=rt.device)
    refused = dict(hit.value or {})
    if strategy in refused:
        runnable = [s for s in BUILT if s not in refused]
        raise ConfigError(
            f"actor.strategy={strategy} cannot run on this device ({rt.device.device_type}, plugin "
            f"{rt.device_plugin!r}): {refused[strategy]} (said by plugin {hit.plugin!r})",
            f"rlport train actor.strategy={runnable[0] if runnable else 'fsdp'}, or run on a device "
            f"whose plugin supports {strategy}",
        )
    if strategy not in BUILT:
        raise ConfigError(
            f"actor.strategy={strategy} is not available in this version of rlport",
            f"rlport train actor.strategy=fsdp (built: {', '.join(BUILT)})",
        )


def before_model_build(strategy: str, rt: Any) -> list[str]:
    """Run every active plugin's ``rlport_before_model_build``; the plugins that did."""
    rt.each("rlport_before_model_build", strategy=strategy, device=rt.device)
    return rt.implementers("rlport_before_model_build")


def optimizer_factory(name: str, strategy: str, rt: Any) -> tuple[Any, str]:
    """The optimizer factory for ``name`` and the plugin that answered."""
    hit = rt.resolve("rlport_optimizer", name=name, device=rt.device, strategy=strategy)
    if hit.value is None or not callable(hit.value):
        raise ConfigError(
            f"plugin {hit.plugin or 'reference'!r} answered rlport_optimizer({name!r}) with "
            f"{hit.value!r}, which is not an optimizer factory",
            f"report it to the maintainers of plugin {hit.plugin or 'reference'!r}",
        )
    return hit.value, hit.plugin
