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
name = "rlport-{name}"
version = "0.1.0"
description = "rlport device plugin for {name}"
requires-python = ">=3.10"
dependencies = ["rlport>={core_version}"]

[project.entry-points."rlport.plugins"]
{name} = "rlport_{module}:plugin"

[tool.setuptools.packages.find]
where = ["src"]
"""

MODULE = '''\
"""rlport device plugin for {name}.

Every hook not implemented here is answered by rlport's reference implementation, so this plugin
runs (on the host) as soon as it is installed. Replace one piece at a time; see the hook reference:
docs/plugin_hooks.md in the rlport repository, or `python -m pydoc rlport.hookspecs`.
Keep this module cheap to import: import your torch extension inside the hooks that need it.
"""

from __future__ import annotations

import os

import rlport
from rlport.types import Capabilities, DeviceInfo, Manifest, ProbeResult

ENABLE = "RLPORT_{upper}_ON_HOST"


class {cls}Plugin:
    rlport_manifest = Manifest(name="{name}", kind="device", hook_api=">={major}.0,<{next_major}")

    @rlport.hookimpl
    def rlport_probe(self) -> ProbeResult:
        # TODO: detect your hardware (a driver file, a shared library) without importing heavy modules.
        if os.environ.get(ENABLE) == "1":
            return ProbeResult(True, f"{{ENABLE}}=1: running on the host until the device probe is written", 1)
        return ProbeResult(False, f"no {name} device detected (export {{ENABLE}}=1 to run on the host)")

    @rlport.hookimpl
    def rlport_device_info(self) -> DeviceInfo:
        # TODO: device_type="{name}", device_module="torch.{name}", count=..., visible_devices_env=...
        return DeviceInfo(device_type="cpu", count=1, names=("{name} (host stand-in)",))

    @rlport.hookimpl
    def rlport_capabilities(self) -> Capabilities:
        # What you claim is tested as must-pass by `rlport conformance --plugin {name}`.
        return Capabilities(dtypes=("float32",), head_dims=(64, 128), causal=True, gqa=True, varlen=True,
                            sleep_tags=("weights",), collectives=("all_reduce", "all_gather", "reduce_scatter",
                                                                  "broadcast"), rollout_engines=("hf",))


plugin = {cls}Plugin()
'''

TEST = '''\
"""Runs without the hardware: the plugin installs, is discovered, and selects on the host."""

import rlport
from rlport import runtime


def test_plugin_is_selected_on_the_host(monkeypatch):
    monkeypatch.setenv("RLPORT_{upper}_ON_HOST", "1")
    monkeypatch.setenv("RLPORT_DEVICE", "{name}")
    runtime.reset()
    assert rlport.init().device_plugin == "{name}"
'''

README = """\
# rlport-{name}

rlport device plugin for {name}. Made with `rlport new-plugin {name}`.

    pip install -e .
    rlport plugins                                   # lists {name}
    RLPORT_{upper}_ON_HOST=1 RLPORT_DEVICE={name} rlport info
    RLPORT_{upper}_ON_HOST=1 rlport conformance --plugin {name}

Status: a scaffold. It has run on no {name} hardware yet; say so here until it has.
"""


def new_plugin(name: str, dest: Path) -> Path:
    """Write the package ``rlport-NAME`` into ``dest/rlport-NAME`` and return that folder."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(
            f"plugin name {name!r} is not usable; expected lower-case letters, digits and _ , starting with a letter",
            f"rlport new-plugin {re.sub(r'[^a-z0-9_]', '_', name.lower()).strip('_') or 'mychip'}",
        )
    root = dest / f"rlport-{name}"
    if root.exists():
        raise ConfigError(
            f"{root} already exists; nothing was written", f"rlport new-plugin {name} --dest OTHER_DIR"
        )
    major = int(HOOK_API_VERSION.split(".")[0])
    from rlport._version import __version__

    fields = {
        "name": name,
        "module": name,
        "upper": name.upper(),
        "cls": "".join(part.title() for part in name.split("_")),
        "major": major,
        "next_major": major + 1,
        "core_version": __version__,
    }
    files = {
        "pyproject.toml": PYPROJECT,
        f"src/rlport_{name}/__init__.py": MODULE,
        "tests/test_plugin.py": TEST,
        "README.md": README,
    }
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return root
