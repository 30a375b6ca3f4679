"""The process's runtime: discovery, selection, activation, and the resolved implementations.

A :class:`Runtime` holds the plugins :mod:`rlport.selection` chose: the device plugin and fabric
plugins, registered (plus the core's reference, last) with a pluggy manager. Everything a caller
needs is resolved through it once and cached, so no hot path dispatches through pluggy. The
process's one Runtime, its patches and its startup summary are :mod:`rlport.bootstrap`'s.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pluggy

from rlport import settings as settings_mod
from rlport.discovery import PluginRecord, new_plugin_manager
from rlport.errors import ConfigError, EngineError
from rlport.reference import NAME as REFERENCE
from rlport.reference import Reference
from rlport.selection import Selection, leave_out_fabrics_not_tuning
from rlport.settings import Settings
from rlport.types import (
    AllocatorSettings,
    AttentionBackend,
    AttentionSpec,
    Capabilities,
    DeviceInfo,
    EngineOffer,
    EnginePlacement,
    MemoryBackend,
    WeightTransport,
)

if TYPE_CHECKING:
    from rlport.devices.hub_kernels import HubKernels
    from rlport.memory import TaggedMemory
    from rlport.rollout.protocol import EngineConfig, RolloutEngine


@dataclass(frozen=True)
class Resolved:
    """A hook's answer with the name of the plugin that gave it."""

    value: Any
    plugin: str


class Runtime:
    """The active plugins of this process and what they resolved to."""

    def __init__(self, settings: Settings, records: list[PluginRecord], selection: Selection) -> None:
        self.settings = settings
        self.records = records
        self.selection = selection
        self.pm = new_plugin_manager()
        for record in selection.active:
            self.pm.register(record.obj, name=record.name)
        self.pm.register(Reference(), name=REFERENCE)
        self._attention: dict[AttentionSpec, Resolved] = {}
        self._transports: dict[tuple[str, EnginePlacement], Resolved] = {}
        self.resolutions: dict[str, str] = {}  # what -> plugin, for the summary
        self.allocator_applied: dict[str, dict[str, str]] = {}  # phase -> variables exported
        self.allocator_overridden: dict[str, str] = {}  # variable -> the user's value kept
        info = self.resolve("rlport_device_info")
        if not isinstance(info.value, DeviceInfo):
            raise ConfigError(
                f"device plugin {self.device_plugin!r} answered rlport_device_info with {info.value!r}",
                f"report it to the maintainers of {selection.device.distribution}",
            )
        self.device: DeviceInfo = info.value
        if self.device.device_type != "cpu" and self.device.count < 1:
            # a probe that cannot import torch (a torch extension's device) answers on outside
            # evidence; the count is learned here, and none is no device to run on
            visible = self.device.visible_devices_env
            raise ConfigError(
                f"device plugin {self.device_plugin!r} is available by its probe, but its device info "
                f"counts {self.device.count} {self.device.device_type!r} devices",
                (f"check {visible} (now {os.environ.get(visible, 'unset')!r}), or " if visible else "")
                + "run on the host with RLPORT_DEVICE=cpu; `rlport doctor` says more",
            )
        for record in leave_out_fabrics_not_tuning(selection, self.collectives_backend, settings.fabrics):
            self.pm.unregister(name=record.name)
        self.worker_env = self.merged("rlport_worker_env", device=self.device)

    # -- names -------------------------------------------------------------------------------------
    @property
    def device_plugin(self) -> str:
        return self.selection.device.name

    @property
    def fabric_plugins(self) -> list[str]:
        return [r.name for r in self.selection.fabrics]

    @property
    def exported_env(self) -> set[str]:
        """Variables rlport itself set in this process (not the user's)."""
        return settings_mod.exported()

    @property
    def active_plugins(self) -> list[str]:
        return [r.name for r in self.selection.active]

    # -- calling hooks -----------------------------------------------------------------------------
    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))  # call order

    def implementers(self, hook_name: str) -> list[str]:
        """Plugin names implementing ``hook_name``, in call order (reference last)."""
        return [impl.plugin_name for impl in self._impls(hook_name)]

    def first_answer_wins(self, hook_name: str) -> bool:
        """Whether ``hook_name`` is a first-answer hook (its spec says ``firstresult``)."""
        spec = getattr(self.pm.hook, hook_name).spec
        return bool(spec and spec.opts.get("firstresult"))

    def _call(self, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
        return impl.function(*(kwargs[name] for name in impl.argnames))

    def resolve(self, hook_name: str, **kwargs: Any) -> Resolved:
        """Call a first-answer-wins hook and say which plugin answered."""
        for impl in self._impls(hook_name):
            value = self._call(impl, kwargs)
            if value is not None:
                self.resolutions.setdefault(hook_name, impl.plugin_name)
                return Resolved(value, impl.plugin_name)
        return Resolved(None, "")

    def each(self, hook_name: str, **kwargs: Any) -> list[Resolved]:
        """Call a collecting hook; every non-None answer with its plugin, in call order."""
        out = []
        for impl in self._impls(hook_name):
            value = self._call(impl, kwargs)
            if value is not None:
                out.append(Resolved(value, impl.plugin_name))
        return out

    def each_guarded(self, hook_name: str, **kwargs: Any) -> tuple[list[Resolved], list[Resolved]]:
        """Like :meth:`each`, but an implementation that raises does not stop the others.

        Returns ``(answers, failures)``; a failure's ``value`` is the exception it raised. For
        diagnostics (``rlport doctor``), where one broken plugin must not hide what the others see.
        """
        answers: list[Resolved] = []
        failures: list[Resolved] = []
        for impl in self._impls(hook_name):
            try:
                value = self._call(impl, kwargs)
            except Exception as exc:
                failures.append(Resolved(exc, impl.plugin_name))
                continue
            if value is not None:
                answers.append(Resolved(value, impl.plugin_name))
        return answers, failures

    def merged(self, hook_name: str, **kwargs: Any) -> dict[str, str]:
        """Merge mapping answers; two plugins disagreeing on a key is an error naming both."""
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for answer in self.each(hook_name, **kwargs):
            for key, value in answer.value.items():
                if key in merged and merged[key] != value:
                    raise ConfigError(
                        f"plugins {owner[key]!r} and {answer.plugin!r} set {key} differently "
                        f"({merged[key]!r} vs {value!r}) in {hook_name}",
                        f"deactivate one of them (RLPORT_FABRICS=...) or export {key} yourself to decide",
                    )
                merged[key], owner[key] = value, answer.plugin
        return merged

    # -- resolved implementations -------------------------------------------------------------------
    def attention_backend(self, spec: AttentionSpec) -> AttentionBackend:
        """The backend for ``spec``, resolved once per distinct spec and cached."""
        hit = self._attention.get(spec)
        if hit is None:
            hit = self.resolve("rlport_attention_backend", spec=spec)
            if hit.value is None:
                from rlport.errors import UnsupportedAttention

                raise UnsupportedAttention(
                    f"no active plugin, and not the reference, supports attention {spec}",
                    "use a supported head dim/dtype, or install a plugin that supports it "
                    "(see `rlport plugins`)",
                )
            self._attention[spec] = hit
        return hit.value

    @property
    def attention_resolutions(self) -> dict[AttentionSpec, Resolved]:
        return dict(self._attention)

    @cached_property
    def memory(self) -> MemoryBackend:
        return self.resolve("rlport_memory_backend", device=self.device).value

    def tagged_memory(self) -> TaggedMemory:
        """A new tag registry over this platform's memory backend."""
        from rlport.memory import TaggedMemory

        return TaggedMemory(self.memory)

    @cached_property
    def collectives_backend(self) -> str:
        return self.resolve("rlport_collectives_backend", device=self.device).value

    def collectives_env(self) -> dict[str, str]:
        return self.merged("rlport_collectives_env", backend=self.collectives_backend)

    def allocator_settings(self, phase: str) -> AllocatorSettings | None:
        return self.resolve("rlport_allocator_settings", phase=phase).value

    def apply_allocator_settings(self, phase: str) -> dict[str, str]:
        """Export ``phase``'s allocator environment (call before the phase's first allocation).

        A variable the user exported is left as it is (their choice wins) and recorded in
        :attr:`allocator_overridden`. Returns what was applied."""
        settings = self.allocator_settings(phase)
        applied: dict[str, str] = {}
        for key, value in (settings.env if settings else {}).items():
            current = os.environ.get(key)
            if current is not None and current != value and key not in settings_mod.exported():
                self.allocator_overridden[key] = current
                continue
            set_env(key, value)
            applied[key] = value
        self.allocator_applied[phase] = applied
        return applied

    def capabilities(self) -> Capabilities:
        return self.resolve("rlport_capabilities").value or Capabilities()

    def torch_device(self, local_rank: int | None = None) -> str:
        """The torch device string for this process (``cpu``, or ``<type>:<local rank>``)."""
        if self.device.device_type == "cpu" or self.device.count == 0:
            return self.device.device_type
        rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
        return f"{self.device.device_type}:{rank % self.device.count}"

    def use_device(self, local_rank: int | None = None) -> str:
        """:meth:`torch_device`, made this process's current device (as ``torch.cuda.set_device``
        does), so tensors made on the bare device type (``"simdev"``, ``"cuda"``) land on it too;
        call once per worker process, before building models."""
        device = self.torch_device(local_rank)
        kind, _, index = device.partition(":")
        if index:
            import torch

            module = torch.get_device_module(kind)
            if hasattr(module, "set_device"):
                module.set_device(int(index))
        return device

    # -- rollout engines ----------------------------------------------------------------------------
    def rollout_engines(self) -> dict[str, tuple[EngineOffer, str]]:
        offers: dict[str, tuple[EngineOffer, str]] = {}
        for answer in self.each("rlport_rollout_engines"):
            for offer in answer.value:
                if offer.name in offers and offers[offer.name][1] != answer.plugin:
                    if answer.plugin == REFERENCE:
                        continue  # a plugin's own engine of that name overrides the reference adapter
                    raise ConfigError(
                        f"rollout engine {offer.name!r} is offered by both {offers[offer.name][1]!r} "
                        f"and {answer.plugin!r}",
                        "uninstall one of the two plugins, or ask its maintainers to rename the engine",
                    )
                offers[offer.name] = (offer, answer.plugin)
        return offers

    def engine_offer(self, name: str) -> EngineOffer:
        """The offer named ``name``, checked to be installed; errors say what to install."""
        offers = self.rollout_engines()
        if name not in offers:
            raise EngineError(
                f"rollout engine {name!r} is not offered by any active plugin (offered: {', '.join(offers)})",
                f"choose one of them: rollout.engine={next(iter(offers), 'hf')}",
            )
        offer = offers[name][0]
        from rlport.extras import missing as not_installed

        missing = not_installed(offer.requires)
        if missing:
            raise EngineError(
                f"rollout engine {name!r} needs {', '.join(missing)}, which is not installed",
                offer.install_hint or f"pip install {' '.join(missing)}",
            )
        return offer

    def weight_transport(self, engine: str, placement: EnginePlacement) -> WeightTransport:
        """How weights reach engine ``engine``, resolved once per (engine, placement) and cached;
        the caller keeps it and calls its ``send`` every step."""
        key = (engine, placement)
        hit = self._transports.get(key)
        if hit is None:
            hit = self.resolve(
                "rlport_weight_transport", engine=engine, device=self.device, placement=placement
            )
            if not isinstance(hit.value, WeightTransport):
                raise ConfigError(
                    f"plugin {hit.plugin!r} answered rlport_weight_transport({engine!r}, {placement}) "
                    f"with {hit.value!r}, which has no name, bucket_bytes and send(engine, named_tensors)",
                    f"report it to the maintainers of plugin {hit.plugin!r}",
                )
            self._transports[key] = hit
        return hit.value

    @cached_property
    def hub_kernels(self) -> HubKernels:
        """Whether transformers may swap layers for Hugging Face Hub kernels in this run, and why
        (:mod:`rlport.devices.hub_kernels`); decided once, from the user's environment."""
        from rlport.devices import hub_kernels

        env = {k: v for k, v in os.environ.items() if k not in settings_mod.exported()}
        return hub_kernels.decide(self.device, self.device_plugin, env)

    # -- training: the answers of the training hooks ----------------------------------------------

    def unsupported_strategies(self) -> tuple[dict[str, str], str]:
        """The training strategies this device cannot run, each with the reason, and the plugin
        that said so (``rlport_unsupported_strategies``; first answer wins)."""
        hit = self.resolve("rlport_unsupported_strategies", device=self.device)
        return dict(hit.value or {}), hit.plugin

    def before_model_build(self, strategy: str) -> list[str]:
        """Run every active plugin's ``rlport_before_model_build``; the plugins that did."""
        self.each("rlport_before_model_build", strategy=strategy, device=self.device)
        return self.implementers("rlport_before_model_build")

    def optimizer_factory(self, name: str, strategy: str) -> tuple[Callable[..., Any], str]:
        """The optimizer factory for ``name`` on ``strategy`` (``rlport_optimizer``; first answer
        wins) and the plugin that answered; an answer that is not callable is the plugin's error."""
        hit = self.resolve("rlport_optimizer", name=name, device=self.device, strategy=strategy)
        if hit.value is None or not callable(hit.value):
            raise ConfigError(
                f"plugin {hit.plugin or REFERENCE!r} answered rlport_optimizer({name!r}) with "
                f"{hit.value!r}, which is not an optimizer factory",
                f"report it to the maintainers of plugin {hit.plugin or REFERENCE!r}",
            )
        return hit.value, hit.plugin

    def make_engine(self, name: str, config: EngineConfig) -> RolloutEngine:
        """Construct engine ``name``: device plugins adjust its arguments, then its factory runs."""
        offer = self.engine_offer(name)
        options = dict(config.options)
        for answer in self.each("rlport_engine_args", engine=name, args=dict(options), device=self.device):
            options.update(answer.value)
        module, _, attr = offer.factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        return factory(replace(config, options=options))


set_env = settings_mod.set_env  # kept importable from here for plugins and older callers
