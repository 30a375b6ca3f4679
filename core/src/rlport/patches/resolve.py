"""Resolving a declared patch: its target path, the owning distribution's version, the object that
owns the attribute, and a lazy replacement.

Nothing here changes anything. Resolution never imports the target's module: a module that is not
in ``sys.modules`` yet is reported as not loaded, and the manager defers the patch to the import hook.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<attrs>{_IDENT}(?:\.{_IDENT})*)$")

ACTIONS = ("added", "replaced", "wrapped")


class ResolveError(Exception):
    """A patch cannot be applied; ``str()`` says why, ``fix`` what to do."""

    def __init__(self, why: str, fix: str = "") -> None:
        super().__init__(why)
        self.fix = fix


@dataclass(frozen=True)
class Target:
    """A parsed ``module:Attr.sub`` path: ``owner`` is the attribute path of the object whose
    attribute ``name`` is patched (``""`` when the module itself owns it)."""

    module: str
    qualname: str

    @property
    def owner(self) -> str:
        return self.qualname.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.qualname.rpartition(".")[2]

    @property
    def key(self) -> str:
        return f"{self.module}:{self.qualname}"


def parse_target(text: str) -> Target:
    """Split ``"pkg.module:Class.attr"``; raise :class:`ResolveError` for any other shape."""
    match = _TARGET.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ResolveError(
            f"target {text!r} is not of the form 'package.module:Attr.sub'",
            "declare the target as the module's dotted name, a colon, then the attribute path, "
            "e.g. 'transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm.forward'",
        )
    return Target(match["module"], match["attrs"])


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_version(distribution: str, installed: str | None, versions: str) -> str | None:
    """Return why the patch must be skipped (``None`` when ``installed`` is inside ``versions``).

    Pre-releases count as inside a range (``2.0.0rc1`` is in ``>=1.9``); so do local versions
    (``2.13.0+cpu`` is in ``==2.13.0``).
    """
    try:
        spec = SpecifierSet(versions, prereleases=True)
    except InvalidSpecifier as error:
        raise ResolveError(
            f"versions {versions!r} is not a valid version range ({error})",
            f"declare versions as packaging specifiers, e.g. versions='>=1.2,<2' for {distribution}",
        ) from None
    if installed is None:
        return f"{distribution} is not installed (the patch is for {distribution}{versions})"
    try:
        version = Version(installed)
    except InvalidVersion:
        return f"{distribution} {installed} has a version that cannot be compared with {versions!r}"
    if not spec.contains(version, prereleases=True):
        return (
            f"{distribution} {installed} is installed; the patch is known to be right for "
            f"{distribution}{versions} only"
        )
    return None


def module_findable(module: str) -> bool:
    """Whether the top-level package of ``module`` can be imported, without importing anything."""
    top = module.partition(".")[0]
    if top in sys.modules:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def walk(module: types.ModuleType, path: str) -> Any:
    """``getattr`` along a dotted ``path`` from ``module`` (``""`` returns the module)."""
    obj: Any = module
    done: list[str] = []
    for part in path.split(".") if path else []:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = f"{module.__name__}:{'.'.join(done)}" if done else module.__name__
            raise ResolveError(f"{where} has no attribute {part!r}") from None
        done.append(part)
    return obj


def defining_class(owner: type, name: str) -> type | None:
    """The class in ``owner``'s MRO whose ``__dict__`` holds ``name``, or ``None``."""
    for klass in owner.__mro__:
        if name in vars(klass):
            return klass
    return None


def raw_attribute(owner: Any, name: str) -> tuple[bool, Any]:
    """``(exists, value)`` of ``owner.name`` as stored, without running descriptors for classes.

    For a class the value is the ``__dict__`` entry of the class in the MRO that defines it (so a
    ``staticmethod`` is returned as the ``staticmethod`` object). For a module or other object it is
    ``getattr`` (which also lets a lazy module such as ``transformers`` load the attribute).
    """
    if isinstance(owner, type):
        klass = defining_class(owner, name)
        return (False, None) if klass is None else (True, vars(klass)[name])
    try:
        return True, getattr(owner, name)
    except AttributeError:
        return False, None


def own_attribute(owner: Any, name: str) -> tuple[bool, Any]:
    """``(present, value)`` of ``name`` in ``owner``'s own ``__dict__`` (not inherited)."""
    try:
        namespace = vars(owner)
    except TypeError:
        return raw_attribute(owner, name)
    return (name in namespace, namespace.get(name))


def kind_of(value: Any, owner: Any) -> str:
    """A word for the summary: function, method, staticmethod, classmethod, property, class,
    module or attribute."""
    if isinstance(value, staticmethod):
        return "staticmethod"
    if isinstance(value, classmethod):
        return "classmethod"
    if isinstance(value, property):
        return "property"
    if isinstance(value, type):
        return "class"
    if isinstance(value, types.ModuleType):
        return "module"
    if callable(value):
        return "method" if isinstance(owner, type) else "function"
    return "attribute"


def load_lazy(path: str) -> Any:
    """Import ``"module:attr.sub"`` and return the object; raise :class:`ResolveError` if it cannot."""
    try:
        target = parse_target(path)
    except ResolveError:
        raise ResolveError(
            f"replacement {path!r} is not of the form 'module:attr'",
            "give the replacement object itself, or its dotted path 'package.module:name'",
        ) from None
    try:
        module = importlib.import_module(target.module)
    except Exception as error:
        raise ResolveError(
            f"replacement {path!r} could not be imported: {type(error).__name__}: {error}",
            f"python -c 'import {target.module}'  # to see the full error",
        ) from None
    try:
        return walk(module, target.qualname)
    except ResolveError as error:
        raise ResolveError(f"replacement {path!r} does not exist: {error}") from None
