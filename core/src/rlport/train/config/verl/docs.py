"""The tables ``docs/from-verl.md`` is generated from, and ``defaults.yaml`` regenerated from verl.

``docs/from-verl.md``'s key table is :func:`markdown_table` (every row of :mod:`.table`) and its
table of differing defaults is :func:`differences_table`; ``core/tests/test_train_verl.py``
checks both are in sync. ``python -m rlport.train.config.verl.docs
PATH/verl/trainer/config/_generated_ppo_trainer.yaml`` rewrites ``defaults.yaml`` for a new verl
(:func:`write_defaults`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlport.train.config.verl.rules import Skip
from rlport.train.config.verl.table import RULES, VERL_VERSION
from rlport.train.config.verl.translate import DEFAULTS_FILE, defaults, flatten, rule_for, same_value


def markdown_table() -> str:
    """The key table of ``docs/from-verl.md``."""
    kinds = {"map": "maps to", "accept": "accepted", "refuse": "refused"}
    lines = ["| verl key | | rlport | why |", "|---|---|---|---|"]
    for r in RULES:
        target = ", ".join(f"`{t}`" for t in r.rlport)
        if r.kind == "accept" and r.values:
            target = "when " + " or ".join(f"`{v!r}`" for v in r.values)
        reason = r.reason.replace("|", "\\|")
        if r.deprecated_for:
            counted = "; verl's count over all ranks, divided by trainer.workers" if r.global_count else ""
            now = r.deprecated_for if " " in r.deprecated_for else f"`{r.deprecated_for}`"
            reason = f"deprecated in verl (now {now}), honoured as verl does{counted}" + (
                f": {reason}" if reason else ""
            )
        lines.append(f"| `{r.verl}` | {kinds[r.kind]} | {target} | {reason} |")
    return "\n".join(lines) + "\n"


def default_differences() -> list[tuple[str, Any, str, Any]]:
    """(verl key, verl's default, rlport setting, rlport's default) for each mapped key whose
    default differs from its rlport setting's: what a verl command that leaves the key out gets
    differently in rlport. Placeholders (paths, ``???``) and verl's references to other keys
    (``${...}``) are left out: they carry no default of their own."""
    from rlport.train.config.keys import default_value

    out = []
    for key, value in flatten(defaults()):
        rule = rule_for(key)
        if rule is None or rule.kind != "map" or value is None:
            continue
        if isinstance(value, str) and (value.startswith("${") or value == "???" or "/" in value):
            continue
        converted = rule.convert(value) if rule.convert is not None else value
        if isinstance(converted, Skip):
            continue
        for target in rule.rlport:
            try:
                ours = default_value(target)
            except (AttributeError, KeyError):
                continue  # an engine option (rollout.options.NAME): the engine's own default
            if not same_value(converted, ours):
                out.append((key, value, target, ours))
    return out


def differences_table() -> str:
    """The table of :func:`default_differences` in ``docs/from-verl.md``."""
    lines = ["| verl key | verl's default | rlport setting | rlport's default |", "|---|---|---|---|"]
    for key, verl, target, ours in default_differences():
        lines.append(f"| `{key}` | `{verl!r}` | `{target}` | `{ours!r}` |")
    return "\n".join(lines) + "\n"


def write_defaults(generated_yaml: str | Path, out: str | Path = DEFAULTS_FILE) -> int:
    """Write verl's defaults (keys and values only, from verl's ``_generated_ppo_trainer.yaml``)
    to ``out``; return the number of keys."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.load(generated_yaml), resolve=False)
    body = OmegaConf.to_yaml(OmegaConf.create(tree))
    Path(out).write_text(
        f"# verl {VERL_VERSION}'s composed ppo_trainer.yaml: every key and its default, comments dropped.\n"
        "# Regenerate: python -m rlport.train.config.verl.docs PATH/verl/trainer/config/_generated_ppo_trainer.yaml\n"
        + body
    )
    return len(flatten(tree))


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    import sys

    print(f"{write_defaults(sys.argv[1])} keys written to {DEFAULTS_FILE}")
