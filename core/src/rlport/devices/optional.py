"""Importing a vendor's optional management library (a probe's better source) without letting a
missing or broken install stop the probe."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


def load(module: str, install: str) -> tuple[Any | None, str]:
    """``(module, "")``, or ``(None, why)`` when it is not installed (``why`` names the ``install``
    command) or fails to import."""
    if importlib.util.find_spec(module) is None:
        return None, f"{module} is not installed ({install})"
    try:
        return importlib.import_module(module), ""
    except Exception as exc:  # a broken install must not stop the probe
        return None, f"{module} failed to import: {type(exc).__name__}: {exc}"
