"""The installed rlport distributions and their versions, read from package metadata only.

Used by ``rlport --version``. Nothing is imported or activated: entry points are listed, never
loaded, so a plugin that fails to import still shows with its version.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from rlport.discovery import GROUP

#: distributions of this project listed even when they provide no plugin
PROJECT = ("rlport", "rlport-conformance")


@dataclass(frozen=True)
class Installed:
    """One installed distribution: its name, version and the plugin entry points it declares."""

    name: str
    version: str
    plugins: tuple[str, ...] = ()


def installed() -> list[Installed]:
    """The core first, then ``rlport-conformance``, then every distribution declaring an
    ``rlport.plugins`` entry point, by name; each distribution once (the first on ``sys.path``)."""
    found: dict[str, Installed] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        key = canonicalize_name(name)
        if not name or key in found:
            continue
        plugins = tuple(sorted(ep.name for ep in dist.entry_points.select(group=GROUP)))
        if plugins or key in PROJECT:
            found[key] = Installed(name, dist.version, plugins)
    order = {name: i for i, name in enumerate(PROJECT)}
    return sorted(
        found.values(), key=lambda d: (order.get(canonicalize_name(d.name), len(order)), d.name.lower())
    )


def render() -> str:
    """``rlport X`` then one line per other distribution: name, version, and its plugins."""
    from rlport._version import HOOK_API_VERSION, __version__

    lines = [f"rlport {__version__} (hook API {HOOK_API_VERSION})"]
    for dist in installed():
        plugins = f"  plugins: {', '.join(dist.plugins)}" if dist.plugins else ""
        lines.append(f"  {dist.name} {dist.version}{plugins}")
    return "\n".join(lines)
