"""Make ``attn_implementation="rlport"`` available from :func:`rlport.init` alone.

:func:`install` (called by ``rlport.init()``) registers the integration at once when transformers'
modeling code (``transformers.modeling_utils``) is already imported, and otherwise waits for that
import with the patch manager's import hook (:class:`rlport.patches.hook.PendingFinder`), so the
name is registered before any model class is defined. Nothing here imports transformers or torch:
a program that never imports transformers never loads it. A registration made explicitly before
(``transformers_integration.register(runtime)``) is kept. :func:`remove` (called by
``rlport.bootstrap.reset()``) takes the hook away and unregisters the name if :func:`install` did the
registering (an explicit registration outlives a reset; its resolved backends are forgotten).
"""

from __future__ import annotations

import sys
import threading
import types
import warnings

from rlport.patches.hook import PendingFinder

WATCHED = "transformers.modeling_utils"
INTEGRATION = "rlport.attention.transformers_integration"

_lock = threading.Lock()
_finder: PendingFinder | None = None


def install() -> None:
    """Register now if transformers' modeling code is loaded, else when it is first imported."""
    global _finder
    with _lock:
        if WATCHED not in sys.modules:
            if _finder is None:
                _finder = PendingFinder({WATCHED}, _on_import)
            _finder.install()
            return
    _register()


def remove() -> None:
    """Remove the import hook, unregister the name if :func:`install` registered it, and forget the
    backends resolved so far (they came from the runtime being reset)."""
    global _finder
    with _lock:
        if _finder is not None:
            _finder.remove()
            _finder = None
    integration = sys.modules.get(INTEGRATION)
    if integration is None:
        return
    if integration.registered_by_init():
        integration.unregister()
    else:
        integration.reset()


def _on_import(module: types.ModuleType) -> None:
    global _finder
    with _lock:
        if _finder is not None:
            _finder.remove()
            _finder = None
    _register()


def _register() -> None:
    try:
        from rlport.attention.transformers_integration import is_registered, register

        if not is_registered():
            register(by_init=True)
    except ImportError as exc:  # transformers installed but without the attention interface
        warnings.warn(
            f"rlport: attn_implementation='rlport' is not available: {exc}; "
            'fix: pip install -U "transformers>=4.56"',
            stacklevel=2,
        )
