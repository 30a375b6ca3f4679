"""``rlport train --show-config [rlport|verl]``: the configuration as YAML, documented.

Each setting's documentation (its field's ``doc``, or for the verl view the rlport key it maps
to) is a comment line of its own above the key, so a long value never runs into it; values are
written by OmegaConf, so the text loads back (``--config``) to the same configuration.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from rlport.train.config.keys import all_fields, all_keys, doc
from rlport.train.config.schema import TrainConfig

WIDTH = 100


def _value_lines(leaf: str, value: Any) -> list[str]:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml({leaf: value}).rstrip("\n").splitlines()


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    return textwrap.wrap(
        text, WIDTH - len(indent) - 2, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# "
    )


def render(items: list[tuple[str, Any, str]], section_docs: dict[str, str], header: str) -> str:
    """YAML of dotted ``(key, value, comment)`` rows, given in section order; a section's line
    carries ``section_docs[section]`` above it."""
    lines = [*_comment(header, ""), ""]
    path: list[str] = []
    for key, value, comment in items:
        *parents, leaf = key.split(".")
        common = 0
        while common < min(len(path), len(parents)) and path[common] == parents[common]:
            common += 1
        for depth in range(common, len(parents)):
            indent = "  " * depth
            section = ".".join(parents[: depth + 1])
            if depth == 0 and lines[-1] != "":
                lines.append("")
            lines.extend(_comment(section_docs.get(section, ""), indent))
            lines.append(f"{indent}{parents[depth]}:")
        path = parents
        indent = "  " * len(parents)
        lines.extend(_comment(comment, indent))
        lines.extend(indent + line for line in _value_lines(leaf, value))
    return "\n".join(lines) + "\n"


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


def rlport_yaml(cfg: TrainConfig | None = None) -> str:
    """rlport's view: every key, its value and its documentation."""
    cfg = cfg if cfg is not None else TrainConfig()
    items = [(key, _get(cfg, key), doc(key)) for key in all_keys()]
    sections = {
        k: str(f.metadata.get("doc", ""))
        for k, f in all_fields().items()
        if dataclasses.is_dataclass(f.type) or k not in all_keys()
    }
    return render(
        items,
        sections,
        "rlport train configuration. Override any key on the command line: section.key=value "
        "(verl's names work too: rlport train --show-config verl).",
    )


def verl_yaml(cfg: TrainConfig | None = None) -> str:
    """verl's view: each verl key that maps onto an rlport setting, with the run's value."""
    from rlport.train.config.verl.table import VERL_VERSION
    from rlport.train.config.verl.translate import verl_view

    cfg = cfg if cfg is not None else TrainConfig()
    flat = verl_view(cfg)
    order = sorted(flat, key=lambda k: k.split(".")[:-1])  # group siblings, keep the table's order
    items = []
    for key in order:
        value, target = flat[key]
        note = doc(target) if target in all_keys() else ""
        items.append((key, value, f"rlport: {target}" + (f"; {note}" if note else "")))
    return render(
        items,
        {},
        f"rlport train configuration under verl {VERL_VERSION}'s key names (the keys that map onto an "
        "rlport setting; docs/from-verl.md lists those accepted or refused, with the reason).",
    )
