"""``rlport new-plugin NAME``: a device-plugin package that installs, is listed by ``rlport plugins``
and runs on the host through the reference implementations before its author writes a line."""

from __future__ import annotations

import re
from pathlib import Path

from rlport._version import HOOK_API_VERSION
from rlport.errors import ConfigError

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "rlport device plugin for {name}"
requires-python = ">=3.10"
dependencies = ["rlport>={core_version}"]

[project.entry-points."rlport.plugins"]
"{name}" = "rlport_{module}:plugin"

[tool.setuptools.packages.find]
where = ["src"]
"""

MODULE = '''\
"""rlport device plugin for {name}.

Every hook below runs on the host as soon as the package is installed: attention is torch's SDPA
(the reference, answered here as this plugin's own), memory is the host's, there are no patches.
Replace one piece at a time; see the hook reference: docs/plugin_hooks.md in the rlport repository,
or `python -m pydoc rlport.hookspecs`. Keep this module cheap to import: import your torch
extension inside the hooks that need it.
"""

from __future__ import annotations

import os

import rlport
from rlport.types import (
    AttentionBackend,
    AttentionSpec,
    Capabilities,
    DeviceInfo,
    Manifest,
    MemoryBackend,
    PatchSpec,
    ProbeResult,
)

ENABLE = "RLPORT_{upper}_ON_HOST"
#: Vendor plugins answer priority 100 and up (the built-in CPU plugin answers 0).
PRIORITY = 100


class {cls}Plugin:
    rlport_manifest = Manifest(name="{name}", kind="device", hook_api=">={major}.0,<{next_major}")

    @rlport.hookimpl
    def rlport_probe(self) -> ProbeResult:
        # TODO: detect your hardware (a driver file, a shared library) without importing heavy modules.
        if os.environ.get(ENABLE) == "1":
            reason = f"{{ENABLE}}=1: running on the host until the device probe is written"
            return ProbeResult(True, reason, PRIORITY)
        reason = f"no {name} device detected (export {{ENABLE}}=1 to run on the host)"
        return ProbeResult(False, reason, PRIORITY)

    @rlport.hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        # TODO: device_type=..., device_module="torch.<module>", count=..., visible_devices_env=...
        return DeviceInfo(device_type="cpu", count=1, names=("{name} (host stand-in)",))

    @rlport.hookimpl
    def rlport_attention_backend(self, spec: AttentionSpec) -> AttentionBackend | None:
        # TODO: return your kernel for the specs it serves. Returning None defers a spec to the
        # reference, which conformance never credits to this plugin: a claimed spec left to the
        # reference fails. Until your kernel exists, serve the reference as your own answer:
        from rlport.attention.sdpa import backend_for

        return backend_for(spec)

    @rlport.hookimpl
    def rlport_memory_backend(self, device: DeviceInfo) -> MemoryBackend:
        # TODO: a device with torch's mem_get_info/empty_cache: rlport.memory.DeviceModuleMemory(device).
        from rlport.memory import HostMemory

        return HostMemory()

    @rlport.hookimpl
    def rlport_patches(self) -> list[PatchSpec]:
        # TODO: declare each change to third-party code as a PatchSpec (the core applies, verifies and
        # reverts it; `rlport conformance` checks the target exists and a model's logits do not change).
        return []

    @rlport.hookimpl
    def rlport_capabilities(self) -> Capabilities:
        # What you claim is tested as must-pass by `rlport conformance --plugin {name}`;
        # head_dims may hold ranges: rlport.types.HeadDimRange(32, 256, 8).
        return Capabilities(
            dtypes=("float32",),
            head_dims=(64, 128),
            causal=True,
            gqa=True,
            varlen=True,
            sleep_tags=("weights",),
            collectives=("all_reduce", "all_gather", "reduce_scatter", "broadcast"),
            rollout_engines=("hf",),
        )


plugin = {cls}Plugin()
'''

TEST = '''\
"""Runs without the hardware: the plugin installs, is discovered, and selects on the host."""

import rlport
from rlport import bootstrap


def test_plugin_is_selected_on_the_host(monkeypatch):
    monkeypatch.setenv("RLPORT_{upper}_ON_HOST", "1")
    monkeypatch.setenv("RLPORT_DEVICE", "{name}")
    bootstrap.reset()
    assert rlport.init().device_plugin == "{name}"
'''

README = """\
# {distribution}

rlport device plugin for {name}. Made with `rlport new-plugin {name}`.

    pip install -e .
    rlport plugins                                   # lists {name}
    RLPORT_{upper}_ON_HOST=1 RLPORT_DEVICE={name} rlport info
    RLPORT_{upper}_ON_HOST=1 rlport conformance --plugin {name}

Status: a scaffold. It has run on no {name} hardware yet; say so here until it has.
"""


#: Names the scaffold accepts: the entry-point names the packaging specification recommends
#: (letters, digits, ``_``, ``.`` and ``-``), with a letter or digit at both ends so that the
#: distribution ``rlport-NAME`` is a valid project name too.
NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?")


def names_for(name: str) -> dict[str, str]:
    """The names derived from a plugin name: its distribution (``rlport-NAME`` normalised as pip
    does), module (``rlport_<name with _>``), environment variable part and class name."""
    if not NAME.fullmatch(name):
        suggestion = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-") or "mychip"
        raise ConfigError(
            f"plugin name {name!r} is not usable; expected letters, digits, '_', '.' and '-' (an entry-point "
            "name), starting and ending with a letter or digit",
            f"rlport new-plugin {suggestion}",
        )
    ident = re.sub(r"[^a-z0-9]+", "_", name.lower())
    return {
        "name": name,
        "distribution": "rlport-" + re.sub(r"[-_.]+", "-", name).lower(),
        "module": ident,
        "upper": ident.upper(),
        "cls": "".join(part.title() for part in ident.split("_") if part) or "Device",
    }


def new_plugin(name: str, dest: Path) -> Path:
    """Write the package ``rlport-NAME`` into ``dest/rlport-NAME`` and return that folder."""
    fields: dict[str, object] = dict(names_for(name))
    root = dest / str(fields["distribution"])
    if root.exists():
        raise ConfigError(
            f"{root} already exists; nothing was written", f"rlport new-plugin {name} --dest OTHER_DIR"
        )
    major = int(HOOK_API_VERSION.split(".")[0])
    from rlport._version import __version__

    fields.update(major=major, next_major=major + 1, core_version=__version__)
    files = {
        "pyproject.toml": PYPROJECT,
        f"src/rlport_{fields['module']}/__init__.py": MODULE,
        "tests/test_plugin.py": TEST,
        "README.md": README,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return root
