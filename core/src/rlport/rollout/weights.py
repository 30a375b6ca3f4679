"""Checks every engine applies to trainer tensors before loading any of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlport.errors import EngineError


def check_named_tensors(
    engine: str, model: str, items: Sequence[tuple[str, Any]], shapes: Mapping[str, tuple[int, ...]]
) -> None:
    """Raise :class:`EngineError` naming every unknown name or wrong shape in ``items`` (nothing is
    loaded when one is wrong). ``shapes`` maps the engine model's parameter names to their shapes."""
    unknown = [name for name, _ in items if name not in shapes]
    if unknown:
        raise EngineError(
            f"{engine} engine: update_weights got name(s) not in the model {model!r}: {unknown[:8]}",
            "send the trainer model's state_dict() names (Hugging Face names, e.g. "
            "'model.layers.0.self_attn.q_proj.weight')",
        )
    wrong = [
        f"{n}: {tuple(t.shape)} != {tuple(shapes[n])}" for n, t in items if tuple(t.shape) != tuple(shapes[n])
    ]
    if wrong:
        raise EngineError(
            f"{engine} engine: update_weights got tensor(s) of the wrong shape: {wrong[:8]}",
            "send tensors from a model with the same architecture as the engine's",
        )
