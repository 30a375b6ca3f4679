"""Checks every engine applies to trainer tensors before loading any of them."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
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


def checkpoint_shapes(model_dir: str | Path, engine: str) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a Hugging Face folder's safetensors files, read from their headers."""
    folder = Path(model_dir)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise EngineError(
            f"{engine} engine: no *.safetensors weights in {str(folder)!r}",
            "save the model with model.save_pretrained(folder) (safetensors is the default)",
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes
