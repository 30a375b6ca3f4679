"""The import hook that applies patches to modules imported after :func:`rlport.init`.

A :class:`PendingFinder` sits first on ``sys.meta_path`` while some patch waits for a module. For a
watched module name it asks the other finders for the real spec and wraps the spec's loader in a
:class:`PatchingLoader`, which runs the real ``exec_module`` and then calls back with the module, so
the patches land before any importer sees the module. Afterwards the module's ``__loader__`` and
``__spec__.loader`` are the real loader again. The hook never imports anything itself.
"""

from __future__ import annotations

import importlib.abc
import sys
import types
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from typing import Any

OnImport = Callable[[types.ModuleType], None]


class PatchingLoader(importlib.abc.Loader):
    """Delegates to ``real`` and calls ``on_import(module)`` after the module body ran."""

    def __init__(self, real: importlib.abc.Loader, on_import: OnImport) -> None:
        self._real = real
        self._on_import = on_import

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._real
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._real
        self._real.exec_module(module)
        self._on_import(module)

    def __getattr__(self, name: str) -> Any:
        # get_source, is_package, get_resource_reader, ...: whatever the real loader offers.
        return getattr(self._real, name)


class PendingFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of every module named in ``watched`` (a live set the manager owns)."""

    def __init__(self, watched: set[str], on_import: OnImport) -> None:
        self.watched = watched
        self._on_import = on_import

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.watched:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec  # a namespace package or a legacy loader: left to the manager's refresh
            spec.loader = PatchingLoader(spec.loader, self._on_import)
            return spec
        return None

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        while self in sys.meta_path:
            sys.meta_path.remove(self)
