"""What the adapters over third-party engines (vLLM, SGLang) share: construction arguments made
from :class:`~rlport.rollout.protocol.EngineConfig`, starting the engine with an error that names
every argument, and the checks before each operation (also used by the ``hf`` engine)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rlport.errors import EngineError
from rlport.rollout.protocol import EngineConfig

#: The EngineConfig fields every adapter passes on, under the engine's own argument names.
CONFIG_FIELDS = ("model", "dtype", "seed", "max_model_len", "trust_remote_code")


def engine_kwargs(
    engine: str,
    config: EngineConfig,
    options: Mapping[str, Any],
    *,
    names: Mapping[str, str],
    fixed: Mapping[str, Any],
) -> dict[str, Any]:
    """The engine's keyword arguments: the :data:`CONFIG_FIELDS` of ``config`` under ``names``
    (field -> the engine's argument), then ``options``, then the adapter's ``fixed`` arguments,
    which an option may not set (an :class:`EngineError` naming them)."""
    clash = [k for k in fixed if k in options]
    if clash:
        raise EngineError(
            f"{engine} engine: option(s) {clash} are set by the engine itself",
            "remove them from the engine options",
        )
    return {**{names[f]: getattr(config, f) for f in CONFIG_FIELDS}, **options, **fixed}


def start(engine: str, factory: Callable[..., Any], kwargs: Mapping[str, Any], fix: str) -> Any:
    """``factory(**kwargs)``; any failure becomes an :class:`EngineError` showing the call."""
    try:
        return factory(**kwargs)
    except Exception as exc:  # engines raise ValueError, RuntimeError, pydantic errors, ...
        call = (
            f"{getattr(factory, '__name__', factory)}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        )
        raise EngineError(f"{engine} engine: {call} failed: {type(exc).__name__}: {exc}", fix) from exc


def check_usable(engine: str, what: str, closed: bool, asleep: Iterable[str]) -> None:
    """Refuse ``what`` after shutdown, or while any of ``asleep`` sleeps."""
    if closed:
        raise EngineError(f"{engine} engine: {what} after shutdown()", "create a new engine")
    asleep = sorted(asleep)
    if asleep:
        raise EngineError(
            f"{engine} engine: {what} while {asleep} asleep", f"call engine.wake_up({tuple(asleep)!r}) first"
        )


def check_sleep_tags(
    engine: str, what: str, tags: Iterable[str], supported: tuple[str, ...], note: str, closed: bool
) -> None:
    """Refuse ``sleep``/``wake_up`` of tags outside ``supported`` (``note`` says why they are so)."""
    if closed:
        raise EngineError(f"{engine} engine: {what} after shutdown()", "create a new engine")
    bad = [t for t in tags if t not in supported]
    if bad:
        raise EngineError(
            f"{engine} engine: cannot {what} tag(s) {bad}: supported sleep tags are {supported or 'none'} ({note})",
            "check engine.capabilities['sleep_tags'] before sleeping; on such platforms use the 'hf' "
            "engine for sleep/wake, or keep the engine awake",
        )
