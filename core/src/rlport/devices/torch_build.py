"""What the installed torch was built for, read without importing torch.

torch writes its build metadata as literal assignments into ``torch/version.py`` (``__version__``,
``cuda``, ``hip``, ``xpu``, ... each a version string or ``None``). A probe must not import torch, so
this module finds that file through :func:`importlib.util.find_spec` (which locates a top-level package
without executing it) and reads the assignments with :mod:`ast`. Nothing in the file is executed.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

#: version.py names that describe the build but name no accelerator runtime.
_NOT_RUNTIMES = frozenset({"__version__", "debug", "git_version", "__all__"})


@dataclass(frozen=True)
class TorchBuild:
    """The installed torch: ``version`` (``"2.13.0+cpu"``) and every accelerator runtime it was built
    against (``runtimes``: version.py name to version, only those that are set)."""

    version: str
    runtimes: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def runtime(self, name: str) -> str | None:
        """The version of runtime ``name`` (a version.py field such as ``"cuda"``) torch was built
        against, or ``None`` when it was not built for it."""
        return self.runtimes.get(name)

    @property
    def host_only(self) -> bool:
        """True for a build with no accelerator runtime (a "CPU build")."""
        return not self.runtimes

    def describe(self) -> str:
        """``"torch 2.13.0+cpu is a CPU build"`` or ``"torch 2.6.0+cu124 is built for cuda 12.4"``."""
        if self.host_only:
            return f"torch {self.version} is a CPU build"
        built = ", ".join(f"{name} {value}" for name, value in sorted(self.runtimes.items()))
        return f"torch {self.version} is built for {built}"


def parse_version_file(source: str, path: str = "") -> TorchBuild:
    """The :class:`TorchBuild` described by the text of a ``torch/version.py``.

    Only literal assignments are read (``name = 'x'`` and ``name: Optional[str] = None``); anything
    else in the file is ignored."""
    values: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            values[target.id] = value.value
    runtimes = {
        name: value
        for name, value in values.items()
        if name not in _NOT_RUNTIMES and isinstance(value, str) and value
    }
    version = values.get("__version__")
    return TorchBuild(
        version=version if isinstance(version, str) else "unknown", runtimes=runtimes, path=path
    )


def version_file() -> Path | None:
    """Where the installed torch's ``version.py`` is, or ``None`` when torch is not installed."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "version.py"
        if candidate.is_file():
            return candidate
    return None


def installed() -> TorchBuild | None:
    """The installed torch's build, or ``None`` when torch is not installed (torch is not imported;
    an unreadable version file reads as version ``"unknown"`` with no runtimes)."""
    path = version_file()
    if path is None:
        return None
    try:
        return parse_version_file(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return TorchBuild(version="unknown", path=str(path))
