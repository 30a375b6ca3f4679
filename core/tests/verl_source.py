"""verl's own code as the reference in tests, from the verl 0.9.1 distribution that
``pip install --no-deps verl`` installs. Its package ``__init__`` needs verl's whole stack, so a
module is loaded from its file, or single functions are taken out of a file whose imports this
environment lacks."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Optional

import pytest


def verl_file(relative: str) -> Path:
    """The installed distribution's ``relative`` file (``verl/utils/...``); skips without verl."""
    try:
        path = Path(str(importlib.metadata.distribution("verl").locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("verl is not installed (pip install --no-deps verl)")
    if not path.is_file():
        pytest.skip(f"verl has no {relative}")
    return path


def verl_module(relative: str, name: str) -> ModuleType:
    """The file ``relative`` loaded as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, str(verl_file(relative)))
    if spec is None or spec.loader is None:
        pytest.skip(f"verl's {relative} is not importable")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assigned(node: ast.stmt) -> set[str]:
    """The names a module-level assignment binds (``X = ...``, ``X: T = ...``)."""
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def verl_functions(
    relative: str, names: tuple[str, ...], namespace: dict[str, Any], constants: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The functions ``names`` of the file ``relative``, compiled alone with the globals
    ``namespace`` (what they use) and the file's own module-level ``constants``: for files whose
    module-level imports are not installed."""
    tree = ast.parse(verl_file(relative).read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    values = [n for n in tree.body if _assigned(n) & set(constants)]
    missing = (set(names) - {d.name for d in defs}) | (set(constants) - set().union(*map(_assigned, values)))
    if missing:
        pytest.skip(f"verl's {relative} has no {sorted(missing)}")
    scope = dict(namespace)
    exec(compile(ast.Module(body=[*values, *defs], type_ignores=[]), relative, "exec"), scope)
    return {name: scope[name] for name in names}


def verl_method(relative: str, cls: str, name: str, namespace: dict[str, Any]) -> Any:
    """The method ``name`` of class ``cls`` in the file ``relative``, compiled alone as a plain
    function (its ``self`` passed by the caller) with the globals ``namespace``."""
    tree = ast.parse(verl_file(relative).read_text())
    found = [
        n
        for c in tree.body
        if isinstance(c, ast.ClassDef) and c.name == cls
        for n in c.body
        if isinstance(n, ast.FunctionDef) and n.name == name
    ]
    if not found:
        pytest.skip(f"verl's {relative} has no {cls}.{name}")
    scope = dict(namespace)
    exec(compile(ast.Module(body=found, type_ignores=[]), relative, "exec"), scope)
    return scope[name]


class VerlActorConfig(SimpleNamespace):
    """Stands in for verl's ``ActorConfig`` where its policy losses read it: attributes, and
    ``get`` as verl's ``BaseConfig`` has it."""

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def verl_core_algos(names: tuple[str, ...]) -> SimpleNamespace:
    """The functions ``names`` of verl's ``trainer/ppo/core_algos.py`` (``agg_loss``, the
    ``compute_policy_loss_*``), with the masked helpers of ``utils/torch_functional.py`` they use;
    their configs are :class:`VerlActorConfig`."""
    import torch

    helpers = verl_functions(
        "verl/utils/torch_functional.py", ("masked_sum", "masked_mean"), {"torch": torch}
    )
    namespace = {
        "torch": torch,
        "verl_F": SimpleNamespace(**helpers),
        "Optional": Optional,
        "Any": Any,
        "ActorConfig": VerlActorConfig,
        "DictConfig": dict,
        "AlgoConfig": type("AlgoConfig", (), {}),
        "register_policy_loss": lambda name: lambda fn: fn,
    }
    return SimpleNamespace(**verl_functions("verl/trainer/ppo/core_algos.py", names, namespace))
