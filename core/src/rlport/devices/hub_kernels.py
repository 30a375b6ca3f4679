"""Hugging Face Hub kernels (transformers' ``use_kernels``, the ``kernels`` package): a device decision.

transformers 5 turns them on whenever ``kernels`` is installed (it comes with transformers) unless
``USE_HUB_KERNELS`` says no. ``from_pretrained`` and ``model.train()`` then swap layer forwards for
kernels fetched from the Hugging Face Hub at run time, re-kernelize for the model's device, and
refuse device types ``kernels`` does not know: code no startup summary showed, that fails offline,
and that can collide with a plugin's own patches.

rlport decides once per process, in ``rlport.init()``, and exports the answer as ``USE_HUB_KERNELS``
so every ``from_pretrained`` in the process and in its workers follows it:

- the user's own ``USE_HUB_KERNELS`` wins (the user asked);
- else they are on only where the device plugin asks (``DeviceInfo.hub_kernels=True``) and the
  device type is one ``kernels`` supports;
- else they are off.

When on, the startup summary lists every layer transformers maps to a Hub kernel on the device type,
with the repository its code comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rlport.types import DeviceInfo

VARIABLE = "USE_HUB_KERNELS"
#: the device types ``kernels.kernelize`` accepts (kernels 0.19); any other raises at ``model.train()``
SUPPORTED_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "neuron", "npu", "rocm", "tpu", "xpu"})
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubKernels:
    """The decision: ``on``, why, and when on the ``(layer, repository)`` pairs that may be swapped."""

    on: bool
    reason: str
    layers: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"on": self.on, "reason": self.reason, "layers": [list(pair) for pair in self.layers]}


def decide(device: DeviceInfo, plugin: str, env: Mapping[str, str]) -> HubKernels:
    """Whether Hub kernels are on for ``device`` (served by ``plugin``), given the environment."""
    if VARIABLE in env:
        on = env[VARIABLE].strip().lower() in _TRUE
        return HubKernels(
            on, f"{VARIABLE}={env[VARIABLE]} set by the user", layers_for(device.device_type) if on else ()
        )
    if not device.hub_kernels:
        return HubKernels(False, f"device plugin {plugin!r} does not ask for them")
    if device.device_type not in SUPPORTED_DEVICE_TYPES:
        return HubKernels(
            False,
            f"device plugin {plugin!r} asks for them, but the kernels package does not support "
            f"device type {device.device_type!r}",
        )
    return HubKernels(True, f"device plugin {plugin!r} asks for them", layers_for(device.device_type))


def layers_for(device_type: str) -> tuple[tuple[str, str], ...]:
    """The layers transformers' default mapping swaps on ``device_type``, each with its repository
    (empty where transformers or kernels is missing: nothing can be swapped then)."""
    try:
        from transformers.integrations import hub_kernels as hub

        mapping = hub._build_kernel_mapping()  # what register_kernel_mapping_transformers() registers
    except Exception:  # no transformers, no kernels, or a mapping this version does not have
        return ()
    out = []
    for layer, per_device in sorted(mapping.items()):
        for device, repos in per_device.items():
            if str(getattr(device, "type", device)) != device_type:
                continue
            for repo in repos.values() if isinstance(repos, dict) else (repos,):
                repo_id = getattr(repo, "_repo_id", None) or getattr(repo, "repo_id", None) or repr(repo)
                version = getattr(repo, "_version", None)
                revision = getattr(repo, "_revision", None)
                pin = f"@{revision}" if revision else f" v{version}" if version is not None else ""
                out.append((layer, f"hf.co/{repo_id}{pin} ({getattr(repo, 'layer_name', layer)})"))
    return tuple(dict.fromkeys(out))
