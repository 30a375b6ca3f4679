"""Helpers for testing plugins: build real installed distributions in a folder.

``make_distribution`` writes a package's modules plus a ``NAME-VERSION.dist-info`` folder (METADATA,
entry_points.txt, RECORD) into ``root``. Put ``root`` on ``sys.path`` (or ``PYTHONPATH`` of a
subprocess) and ``importlib.metadata`` finds it exactly as it finds a pip-installed distribution;
its entry points are discovered by the core like any plugin's. Used by the core's tests, by the
conformance suite's deliberately broken plugins, and available to plugin authors.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name)


def make_distribution(
    root: Path | str,
    name: str,
    version: str = "0.1.0",
    *,
    modules: Mapping[str, str],
    entry_points: Mapping[str, Mapping[str, str]] | None = None,
    requires: tuple[str, ...] = (),
) -> Path:
    """Write a distribution ``name==version`` into ``root`` and return its dist-info folder.

    ``modules`` maps a relative file path (``"pkg/__init__.py"``) to its source (dedented);
    ``entry_points`` maps group to ``{entry name: "module:attr"}``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, source in modules.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = root / f"{_normalise(name)}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    if entry_points:
        lines: list[str] = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{key} = {value}" for key, value in entries.items()]
            lines.append("")
        (info / "entry_points.txt").write_text("\n".join(lines))
    files = [*modules, f"{info.name}/METADATA", f"{info.name}/entry_points.txt", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    (info / "INSTALLER").write_text("rlport.testing\n")
    return info


def make_plugin(
    root: Path | str,
    name: str,
    source: str,
    *,
    version: str = "0.1.0",
    entry_name: str | None = None,
    attr: str = "plugin",
) -> Path:
    """Write a single-module plugin distribution ``rlport-NAME`` whose module ``rlport_NAME``
    (``source``) is named by an ``rlport.plugins`` entry point ``entry_name`` (default ``name``)."""
    module = f"rlport_{_normalise(name)}"
    return make_distribution(
        root,
        f"rlport-{name}",
        version,
        modules={f"{module}.py": source},
        entry_points={"rlport.plugins": {entry_name or name: f"{module}:{attr}" if attr else module}},
    )


def pip_install(package: Path | str, target: Path | str) -> Path:
    """Install the project folder ``package`` (no dependencies) into ``target`` with pip, as a user
    would install a plugin, and return ``target``; put it on ``sys.path`` / ``PYTHONPATH`` to use it.
    Raises ``subprocess.CalledProcessError`` carrying pip's output when the install fails."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(target)


def hook_runtime(plugins: dict[str, object], device: Any) -> Any:
    """A :class:`rlport.runtime.Runtime` over given plugin objects and the reference, with no probing
    or selection: its hook calls (``resolve``, ``each``, ``implementers``) behave as a real one's,
    for testing a plugin's hooks on a machine without its hardware. ``device`` stands in for what
    the first plugin's ``rlport_device_info`` would say; the first plugin is the device plugin."""
    from types import SimpleNamespace

    from rlport.discovery import new_plugin_manager
    from rlport.reference import NAME, Reference
    from rlport.runtime import Runtime

    rt = Runtime.__new__(Runtime)
    rt.pm = new_plugin_manager()
    for name, obj in plugins.items():
        rt.pm.register(obj, name=name)
    rt.pm.register(Reference(), name=NAME)
    rt.device = device
    rt.resolutions = {}
    rt.selection = SimpleNamespace(device=SimpleNamespace(name=next(iter(plugins), NAME)))
    return rt
