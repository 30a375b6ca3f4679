"""Setting, verifying and restoring one attribute, identity for identity.

:func:`replacement_for` computes the value to store from the action and the stored original
(keeping a ``staticmethod``/``classmethod`` a descriptor of the same type), :func:`set_attribute`
stores and verifies it and returns an :class:`Applied` handle, :func:`restore` undoes exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlport.patches.resolve import ResolveError, own_attribute

_BINDERS = (staticmethod, classmethod)


@dataclass
class Applied:
    """What :func:`set_attribute` changed: ``owner.name`` was ``original`` in ``owner``'s own
    ``__dict__`` (``had_own``), or absent there (inherited or new) and is now ``new``."""

    owner: Any
    name: str
    had_own: bool
    original: Any
    new: Any


def replacement_for(action: str, current: Any, replacement: Any) -> Any:
    """The value to store for ``action``, given the ``current`` stored value (``None`` for added).

    ``wrapped``: ``replacement`` is a wrapper called with the original; for a ``staticmethod`` or
    ``classmethod`` it receives the underlying function and its result is put back into the same
    descriptor type (unless it already is one). ``replaced``: a plain function replacing a
    ``staticmethod``/``classmethod`` is put into the same descriptor type. ``added``: stored as given.
    """
    binder = type(current) if isinstance(current, _BINDERS) else None
    if action == "wrapped":
        if not callable(replacement):
            raise ResolveError(
                f"the wrapper {replacement!r} is not callable",
                "for action='wrapped' give a function wrapper(original) -> replacement",
            )
        inner = current.__func__ if binder else current
        try:
            result = replacement(inner)
        except Exception as error:
            raise ResolveError(f"the wrapper raised {type(error).__name__}: {error}") from None
        if result is None:
            raise ResolveError("the wrapper returned None instead of the wrapped object")
        return binder(result) if binder and not isinstance(result, (*_BINDERS, property)) else result
    if action == "replaced" and binder and callable(replacement) and not isinstance(replacement, _BINDERS):
        return binder(replacement)
    return replacement


def set_attribute(owner: Any, name: str, new: Any) -> Applied:
    """Store ``new`` as ``owner.name`` and check that it took; restore and raise if it did not."""
    had_own, original = own_attribute(owner, name)
    try:
        setattr(owner, name, new)
    except Exception as error:
        raise ResolveError(f"setting the attribute raised {type(error).__name__}: {error}") from None
    applied = Applied(owner, name, had_own, original, new)
    present, now = own_attribute(owner, name)
    if not present or now is not new:
        _put_back(applied)
        raise ResolveError(
            f"verification failed: after setting it the attribute is {now!r}, not the replacement"
        )
    return applied


def is_current(applied: Applied) -> bool:
    """Whether ``owner.name`` still is the value rlport stored."""
    present, now = own_attribute(applied.owner, applied.name)
    return present and now is applied.new


def restore(applied: Applied) -> None:
    """Put the original back (or delete the attribute if the owner did not have its own one).

    Raises :class:`ResolveError`, changing nothing, when other code has replaced the value rlport
    stored since (restoring would silently undo that change).
    """
    if not is_current(applied):
        _, now = own_attribute(applied.owner, applied.name)
        raise ResolveError(f"it was changed by other code after rlport applied it (now {now!r}); left as is")
    _put_back(applied)
    present, now = own_attribute(applied.owner, applied.name)
    if (applied.had_own and (not present or now is not applied.original)) or (
        not applied.had_own and present
    ):
        raise ResolveError(f"restoring the original did not take (now {now!r})")


def _put_back(applied: Applied) -> None:
    if applied.had_own:
        setattr(applied.owner, applied.name, applied.original)
    else:
        delattr(applied.owner, applied.name)
