"""Errors that say what failed and the command that fixes it.

Every error the core raises for a user carries a ``fix``: a command or setting, written so it can be
pasted. ``str(error)`` renders both, in the manner of ``what failed\\n  fix: ...``.
"""

from __future__ import annotations


class RlportError(Exception):
    """Base class: ``message`` says what failed (naming the value and what was expected),
    ``fix`` says what to do."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class PluginError(RlportError):
    """A plugin could not be loaded, validated, probed or activated."""


class SelectionError(RlportError):
    """No device plugin, or more than one, could be selected."""


class ConfigError(RlportError):
    """A setting (environment variable, config key, CLI option) has a value that cannot be used."""


class UnsupportedAttention(RlportError):
    """An attention backend was called with a configuration it does not support.

    Raised instead of returning a wrong result; the conformance suite requires it."""


class PatchError(RlportError):
    """A declared patch could not be applied, verified or reverted."""


class EngineError(RlportError):
    """A rollout engine could not be found, constructed, or asked to do what it cannot."""


class WorkerError(RlportError):
    """A training worker died or failed: ``rank``, ``node`` and ``step`` say which and when."""

    def __init__(self, message: str, fix: str = "", *, rank: int, node: str, step: int | None) -> None:
        super().__init__(message, fix)
        self.rank, self.node, self.step = rank, node, step
