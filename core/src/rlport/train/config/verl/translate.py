"""What a verl key does in rlport: the table (:mod:`.table`) applied to one key and its value.

:func:`translate` is what the command line and ``--config`` files go through
(``config/overrides.py``): it says which rlport settings a verl key sets, that it has no effect
(a note), or why it is refused. Beside it: verl's defaults (``defaults.yaml``, :func:`defaults`),
whether a value is verl's default (:func:`at_default`), verl's global counts as rlport's
per-worker ones (:func:`per_worker`), and the run's configuration under verl's names
(:func:`verl_view`, for ``--show-config verl``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.train.config.verl.rules import Rule, Skip
from rlport.train.config.verl.table import RULES, VERL_VERSION

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")


@dataclass(frozen=True)
class Translation:
    """What one verl key does: ``sets`` (rlport key, value) pairs, a ``note`` that it has no
    effect, or a ``refusal`` (the message)."""

    rule: Rule | None
    sets: tuple[tuple[str, Any], ...] = ()
    note: str = ""
    refusal: str = ""
    #: (rlport key, verl's count over all ranks): set once the workers are known (:func:`per_worker`)
    per_worker: tuple[tuple[str, Any], ...] = ()


def rule_for(key: str) -> Rule | None:
    """The rule covering ``key``: an exact key before the longest prefix."""
    for rule in RULES:
        if rule.verl == key:
            return rule
    prefixes = [r for r in RULES if r.verl.endswith(".*") and r.matches(key)]
    return max(prefixes, key=lambda r: len(r.verl), default=None)


@functools.lru_cache(maxsize=2)
def defaults(resolved: bool = False) -> dict[str, Any]:
    """verl's default of every key of its composed ``ppo_trainer.yaml`` (dotted key -> value;
    interpolations as verl writes them, or ``resolved``)."""
    from omegaconf import OmegaConf

    tree = OmegaConf.load(DEFAULTS_FILE)
    return {k: (resolve(tree, k, v) if resolved else v) for k, v in flatten(OmegaConf.to_container(tree))}


def resolve(tree: Any, key: str, written: Any) -> Any:
    """The value of dotted ``key`` in the OmegaConf ``tree`` with its interpolations resolved
    against the tree itself; ``written`` when they cannot be."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if written == "???":
        return written  # verl's mandatory value, unset
    try:
        value = OmegaConf.select(tree, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return written
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted leaf keys of a nested mapping; an empty mapping is a leaf."""
    if not isinstance(tree, dict) or not tree:
        return [(prefix.rstrip("."), tree)]
    out: list[tuple[str, Any]] = []
    for k, v in tree.items():
        out.extend(flatten(v, f"{prefix}{k}."))
    return out


def same_value(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same setting value, as verl's YAML and a command line write it
    (``True`` and ``"true"``, ``1`` and ``1.0``)."""
    if a == b and type(a) is type(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def _in_verl(key: str) -> bool:
    """``key`` is in verl's defaults, or an entry of a free-form mapping there (``{}``)."""
    if key in defaults():
        return True
    parts = key.split(".")
    return any(defaults().get(".".join(parts[:i])) == {} for i in range(1, len(parts)))


def at_default(key: str, value: Any, written: Any = None) -> bool:
    """``value`` (or ``written``, the same before interpolations were resolved) is verl's default."""
    if key not in defaults():
        return False
    return same_value(value, defaults(resolved=True)[key]) or same_value(
        value if written is None else written, defaults()[key]
    )


def translate(key: str, value: Any, written: Any = None) -> Translation | None:
    """The effect of verl's ``key=value`` (``written``: the value before a file's interpolations
    were resolved); None when no rule and no verl default knows ``key``."""
    rule = rule_for(key)
    if rule is None or not (rule.verl == key or rule.kind == "map" or _in_verl(key)):
        return None  # a prefix rule covers verl's keys below it, not a misspelt one
    if rule.deprecated_for:
        return _deprecated(rule, key, value)
    if rule.kind == "map":
        converted = rule.converted(value)
        if isinstance(converted, Skip):
            return Translation(
                rule, note=f"{key}={value!r} leaves {', '.join(rule.rlport)} at rlport's default"
            )
        if rule.verl.endswith(".*"):
            rest = key[len(rule.verl) - 1 :]
            return Translation(rule, sets=((rule.rlport[0][:-1] + rest, converted),))
        return Translation(rule, sets=tuple((target, converted) for target in rule.rlport))
    default = at_default(key, value, written)
    if rule.kind == "accept":
        if not rule.values or any(same_value(value, v) for v in rule.values):
            return Translation(rule, note=f"{key}={value!r}: {rule.reason}")
        shown = ", ".join(repr(v) for v in rule.values)
        return Translation(
            rule, refusal=f"verl key '{key}' is {value!r}; rlport takes only {shown}: {rule.reason}"
        )
    if default:
        return Translation(rule, note=f"{key} at verl's default has no effect: {rule.reason}")
    return Translation(rule, refusal=f"verl key '{key}' is refused (set to {value!r}): {rule.reason}")


def _deprecated(rule: Rule, key: str, value: Any) -> Translation:
    """A deprecated key verl still honours: what it sets (a ``global_count`` is divided by the
    workers later, in :func:`per_worker`), and the note naming verl's current key."""
    if value is None:
        return Translation(rule, note=f"{key}=None (deprecated in verl {VERL_VERSION}) has no effect")
    note = f"{key}={value!r} is deprecated in verl {VERL_VERSION} (now: {rule.deprecated_for})"
    if rule.kind == "accept":
        return Translation(rule, note=f"{note}; {rule.reason}")
    if rule.global_count:
        return Translation(rule, note=f"{note}; honoured as verl does", per_worker=((rule.rlport[0], value),))
    sets = tuple((target, rule.converted(value)) for target in rule.rlport)
    return Translation(rule, sets=sets, note=f"{note}; honoured as {rule.rlport[0]} ({rule.reason})")


def per_worker(verl_key: str, rlport_key: str, value: Any, workers: int, given: set[str]) -> tuple[Any, str]:
    """verl's global count ``value`` of deprecated ``verl_key`` as rlport's per-worker
    ``rlport_key``: divided by the data-parallel ranks, as verl's workers divide it. Returns
    (value, note); raises ConfigError when verl would refuse it (its current key set too, or fewer
    than one per rank)."""
    from rlport.errors import ConfigError

    rule = rule_for(verl_key)
    assert rule is not None and rule.global_count
    if rule.deprecated_for in given:
        raise ConfigError(
            f"both '{verl_key}' (deprecated) and '{rule.deprecated_for}' are set; verl refuses this too",
            f"remove {verl_key} from the command or file",
        )
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"verl key '{verl_key}' is {value!r}; expected a whole number of sequences, at least 1",
            f"rlport train {rule.deprecated_for}=4 (per worker) instead",
        )
    per = value // workers
    if per < 1:
        raise ConfigError(
            f"verl key '{verl_key}'={value} is a count over all {workers} workers, under one per worker",
            f"give at least {workers}, or set {rule.deprecated_for} (per worker) instead",
        )
    return per, f"{verl_key}={value} over {workers} worker(s): {rlport_key}={per} per worker"


def verl_names_of(rlport_key: str) -> list[str]:
    """The verl keys that map onto ``rlport_key`` (verl's current names, not deprecated ones)."""
    return [r.verl for r in RULES if r.kind == "map" and rlport_key in r.rlport and not r.deprecated_for]


def verl_view(cfg: Any) -> dict[str, Any]:
    """The run's configuration under verl's key names (the mapped keys only), nested."""
    from rlport.train.config.keys import default_value

    flat: dict[str, tuple[Any, str]] = {}
    for rule in RULES:
        if rule.kind != "map" or rule.verl.endswith(".*") or rule.verl in flat or rule.deprecated_for:
            continue
        target = rule.rlport[0]
        value: Any = cfg
        try:
            for part in target.split("."):
                value = value[part] if isinstance(value, dict) else getattr(value, part)
        except (AttributeError, KeyError):
            try:
                value = default_value(target)
            except AttributeError:
                continue  # an engine option that is not set
        if rule.back is not None:
            value = rule.back(value)
        flat[rule.verl] = (value, target)
    return flat  # type: ignore[return-value]
