"""The environment variables that steer selection, read and validated in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rlport.errors import ConfigError

DEVICE = "RLPORT_DEVICE"
FABRICS = "RLPORT_FABRICS"
PLUGINS = "RLPORT_PLUGINS"
STRICT = "RLPORT_STRICT"
SUMMARY = "RLPORT_SUMMARY"
#: Set by the process that printed the summary; inherited by its workers so they stay quiet.
SUMMARY_SHOWN = "RLPORT_SUMMARY_SHOWN"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
SUMMARY_MODES = ("0", "1", "json")


@dataclass(frozen=True)
class Settings:
    device: str | None
    fabrics: tuple[str, ...] | None
    allow: frozenset[str] | None  # None: every installed plugin; empty: built-ins only
    strict: bool
    summary: str  # "0" | "1" | "json"

    def allows(self, name: str, builtin: bool) -> bool:
        return builtin or self.allow is None or name in self.allow


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{key}={env[key]!r} is not a boolean; expected 1 or 0", fix=f"export {key}=1")


def read(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default ``os.environ``), raising ConfigError on bad values."""
    env = os.environ if env is None else env
    summary = env.get(SUMMARY, "1").strip().lower() or "1"
    if summary not in SUMMARY_MODES:
        raise ConfigError(
            f"{SUMMARY}={env[SUMMARY]!r} is not a summary mode; expected one of 0, 1, json",
            fix=f"export {SUMMARY}=1",
        )
    allow = frozenset(_names(env[PLUGINS])) if PLUGINS in env else None
    fabrics = _names(env[FABRICS]) if FABRICS in env else None
    return Settings(
        device=env.get(DEVICE, "").strip() or None,
        fabrics=fabrics,
        allow=allow,
        strict=_flag(env, STRICT),
        summary=summary,
    )


# -- variables rlport itself exports ------------------------------------------------------------------

_exported: dict[str, str | None] = {}  # variable -> its value before rlport set it


def set_env(key: str, value: str) -> None:
    """Set an environment variable for this process and its workers, remembering the old value so
    :func:`restore_env` can put it back."""
    _exported.setdefault(key, os.environ.get(key))
    os.environ[key] = value


def exported() -> set[str]:
    """Variables rlport set in this process (not the user's own)."""
    return set(_exported)


def restore_env() -> None:
    """Put back every variable :func:`set_env` changed (for tests and ``rlport.bootstrap.reset``)."""
    for key, old in _exported.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    _exported.clear()
