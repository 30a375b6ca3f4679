"""Shared fixtures: a clean rlport environment per test, and a folder of fixture distributions."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlport import bootstrap
from rlport import settings as settings_mod

RLPORT_VARS = (
    settings_mod.DEVICE,
    settings_mod.FABRICS,
    settings_mod.PLUGINS,
    settings_mod.STRICT,
    settings_mod.SUMMARY,
    settings_mod.SUMMARY_SHOWN,
)


@pytest.fixture(autouse=True)
def clean_rlport(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no rlport variables set, no runtime, and the summary off."""
    bootstrap.reset()
    for var in RLPORT_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(settings_mod.SUMMARY, "0")
    yield
    bootstrap.reset()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path where tests build installed fixture distributions."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:  # fixture plugin modules must not leak into later tests
        if str(getattr(sys.modules[name], "__file__", "")).startswith(str(root)):
            del sys.modules[name]
    importlib.invalidate_caches()
