"""Merge a run's configuration: the defaults, a ``--config`` YAML file, then the command line.

The schema is :class:`rlport.train.config.schema.TrainConfig` as an OmegaConf structured config, so types
are OmegaConf's to check. Overrides are parsed by Hydra's override parser, the grammar verl's
``main_ppo`` takes: ``key=value``, ``key=[a,b]``, ``+key=value`` (accepted also for a key the
schema has, as verl's docs write keys older verl files lacked), ``++key=value`` and ``~key`` (back
to the default). A key rlport does not have is looked up in verl's table
(:mod:`rlport.train.config.verl`); every unknown, refused or mistyped key of the run is reported in
one :class:`~rlport.errors.ConfigError`, each with its closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport.train.config.keys import all_fields, all_keys, default_value, example, optional_inner, type_name
from rlport.train.config.schema import TrainConfig
from rlport.train.config.verl import translate as verl
from rlport.train.config.verl.rules import Skip
from rlport.train.config.verl.table import RULES as VERL_RULES


@dataclass(frozen=True)
class Entry:
    """One setting from the file or the command line."""

    key: str
    value: Any
    where: str  # " (in override 'k=v')" or " (in run.yaml)"
    raw: str  # the value as written on the command line ("" from a file), for messages
    delete: bool = False
    written: Any = None  # a file's value before its interpolations were resolved


def _parser() -> Any:
    from rlport.extras import import_optional

    overrides = import_optional(
        "hydra.core.override_parser.overrides_parser", "train", purpose="parsing overrides"
    )
    return overrides.OverridesParser.create()


def parse_overrides(texts: list[str] | tuple[str, ...]) -> tuple[list[Entry], list[ConfigError]]:
    """Hydra-parse each override; a malformed one is a problem, the rest still parse."""
    entries: list[Entry] = []
    problems: list[ConfigError] = []
    if not texts:
        return entries, problems
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import OverrideParseException

    parser = _parser()
    for text in texts:
        where = f" (in override '{text}')"
        if "=" not in text and not text.startswith("~"):
            problems.append(
                ConfigError(
                    f"override {text!r} is not of the form key=value",
                    "write overrides as dotted key=value pairs, e.g. rlport train trainer.steps=50",
                )
            )
            continue
        try:
            (o,) = parser.parse_overrides([text])
        except OverrideParseException as exc:
            problems.append(
                ConfigError(
                    f"override {text!r} cannot be parsed: {str(exc).splitlines()[0]}",
                    "quote values with spaces or special characters, e.g. key='a b' or key=\"[a,b]\"",
                )
            )
            continue
        if o.is_sweep_override():
            problems.append(
                ConfigError(
                    f"override {text!r} is a sweep (several runs); rlport train runs one",
                    "give one value, e.g. trainer.seed=1",
                )
            )
            continue
        key = o.get_key_element().lstrip("+~")
        if o.type == OverrideType.DEL:
            entries.append(Entry(key, None, where, "", delete=True))
            continue
        # as the user wrote it (Hydra's get_value_element_as_str() re-escapes ``:`` ``{`` ``\\``)
        raw = text.split("=", 1)[1] if "=" in text else ""
        entries.append(Entry(key, o.value(), where, raw))
    return entries, problems


def file_entries(path: str | Path) -> list[Entry]:
    """The leaf settings of a YAML file in rlport's or verl's layout (OmegaConf reads it;
    interpolations stay as written)."""
    from rlport.extras import import_optional

    yaml = import_optional("yaml", "train", purpose="reading a --config file")
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file '{p}' does not exist", "pass an existing YAML file, e.g. --config my.yaml"
        )
    try:
        tree = OmegaConf.load(p)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}", "fix the YAML syntax") from exc
    data = OmegaConf.to_container(tree, resolve=False)
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{p}' must hold a mapping of sections", "see rlport train --show-config"
        )
    where = f" (in {p})"
    # interpolations refer to the file's own keys (verl's, in a verl file)
    return [
        Entry(key, verl.resolve(tree, key, written), where, "", written=written)
        for key, written in _leaves(data)  # type: ignore[arg-type]
    ]


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted settings: descend into rlport's sections and into verl's tree; an rlport mapping
    field (``rollout.options``) or a list is one value."""
    fields = all_fields()
    out: list[tuple[str, Any]] = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        f = fields.get(key)
        is_section = f is not None and dataclasses.is_dataclass(_hint(key))
        if isinstance(v, dict) and v and (is_section or f is None):
            out.extend(_leaves(v, key + "."))
        else:
            out.append((key, v))
    return out


@functools.cache
def _hint(key: str) -> Any:
    hints: Any = TrainConfig
    for part in key.split("."):
        hints = typing.get_type_hints(hints)[part]
    return hints


def _rlport_target(key: str) -> str | None:
    """``key`` itself when rlport's schema has it (or it is an entry of a mapping field, such as
    ``rollout.options.x``), else None."""
    fields = all_fields()
    if key in fields:
        return key
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in fields and typing.get_origin(optional_inner(_hint(head))) is dict:
            return key
    return None


def merge(
    base: TrainConfig,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | Path | None = None,
    notes: list[str] | None = None,
    origins: dict[str, str] | None = None,
    global_counts: list[tuple[str, str, Any]] | None = None,
) -> tuple[TrainConfig, list[ConfigError]]:
    """``base``, then ``config_file``, then ``overrides``; returns the configuration (without the
    settings that failed) and a problem for every unknown, refused or mistyped key. ``notes``
    collects what accepted verl keys mean here; ``origins`` which verl key set each setting;
    ``global_counts`` the (verl key, rlport key, value) of verl's deprecated counts over all
    ranks, which :func:`rlport.train.config.schema.load_config` divides once the workers are known."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(base)
    entries = file_entries(config_file) if config_file is not None else []
    parsed, problems = parse_overrides(overrides)
    notes = notes if notes is not None else []
    given = _last_of_each([*entries, *parsed])
    origins = origins if origins is not None else {}
    global_counts = global_counts if global_counts is not None else []
    for entry in given:
        problems.extend(_apply(cfg, entry, notes, origins, global_counts))
    keys = {e.key for e in given if not e.delete}
    # verl's own critic names (critic.model.path, critic.optim.lr, ...), not rlport's
    critic = sorted(k for k in keys if k.startswith("critic.") and _rlport_target(k) is None)
    if critic and "algorithm.adv_estimator" not in keys:
        cfg.algorithm.adv_estimator = "gae"  # verl's default estimator: its PPO commands do not name it
        notes.append(
            f"algorithm.adv_estimator=gae (PPO with a critic): the run sets {critic[0]} and names no "
            "estimator (verl's default is gae, rlport's grpo)"
        )
    return OmegaConf.to_object(cfg), problems  # type: ignore[return-value]


def _last_of_each(entries: list[Entry]) -> list[Entry]:
    """A key set twice (in the file, then on the command line) counts once: the last time, in its
    place."""
    seen: set[str] = set()
    out = []
    for e in reversed(entries):
        if e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out[::-1]


def _apply(
    cfg: Any, e: Entry, notes: list[str], origins: dict[str, str], global_counts: list[tuple[str, str, Any]]
) -> list[ConfigError]:
    target = _rlport_target(e.key)
    if target is not None:
        value = default_value(target) if e.delete else _as_written(target, e)
        rule = verl.rule_for(target)
        if rule is not None and rule.verl == target and rule.convert is not None:
            value = rule.converted(value)  # a name rlport shares with verl takes verl's values too
            if isinstance(value, Skip):
                return []
        problem = _set(cfg, target, value, e, shown=f"'{e.key}'")
        return [problem] if problem else []
    value = verl.defaults().get(e.key) if e.delete else e.value
    translation = verl.translate(e.key, value, e.written)
    if translation is None:
        return [unknown_key(e.key, e.where)]
    if translation.refusal:
        return [ConfigError(translation.refusal + e.where, _refusal_fix(e.key))]
    if translation.note:
        notes.append(translation.note)
    global_counts.extend((e.key, rl_key, value) for rl_key, value in translation.per_worker)
    out = []
    for rl_key, value in translation.sets:
        if value == "???":
            out.append(
                ConfigError(
                    f"verl key '{e.key}' is ??? (a value verl requires){e.where}", f"rlport train {e.key}=..."
                )
            )
            continue
        problem = _set(cfg, rl_key, value, e, shown=f"'{e.key}' (rlport's '{rl_key}')")
        if problem:
            out.append(problem)
        else:
            origins[rl_key] = e.key
    return out


def _as_written(key: str, e: Entry) -> Any:
    """``e``'s value; for a string setting, a number as the command line wrote it: Hydra reads
    digits with underscores as one number (``0.5_2`` is 0.52, ``3_1`` is 31), where a string
    setting wants the text (rollout correction's ``lower_upper`` thresholds)."""
    number = isinstance(e.value, (int, float)) and not isinstance(e.value, bool)
    if number and e.raw and key in all_fields() and optional_inner(_hint(key)) is str:
        return e.raw
    return e.value


def _refusal_fix(key: str) -> str:
    return f"remove {key} from the command or file (rlport train --show-config lists what rlport sets)"


def _set(cfg: Any, key: str, value: Any, e: Entry, *, shown: str) -> ConfigError | None:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    hint = _hint(key) if key in all_fields() else Any
    inner = optional_inner(hint)
    if dataclasses.is_dataclass(inner) and not isinstance(value, dict):
        first = dataclasses.fields(inner)[0].name
        return ConfigError(
            f"config key '{key}' is a section, not a value{e.where}",
            f"set one of its keys, e.g. rlport train {key}.{first}=...",
        )
    if typing.get_origin(inner) is list and isinstance(value, str):
        value = [value]  # a single file, as verl writes data.train_files=train.parquet
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException:
        got = e.raw or value
        return ConfigError(
            f"config key {shown} expects {type_name(hint)}, got {got!r}{e.where}",
            f"rlport train {example(key)}",
        )
    try:  # an interpolation (${NAME}, ${NAME:-8}) must resolve against rlport's own settings
        node = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(node):
            OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as exc:
        parent, _, leaf = key.rpartition(".")
        holder = OmegaConf.select(cfg, parent) if parent else cfg
        if key in all_fields():
            OmegaConf.update(cfg, key, default_value(key), merge=False)
        else:
            del holder[leaf]  # an entry of a mapping (rollout.options.NAME): gone again
        got = e.raw or value
        return ConfigError(
            f"config key {shown} is {got!r}, an interpolation rlport cannot resolve "
            f"({str(exc).splitlines()[0]}){e.where}",
            "give the value itself; in a shell script, check that the variable is set and the "
            f"value is not in single quotes, e.g. rlport train {example(key)}",
        )
    return None


# -------------------------------------------------------------------------------------------------
# Closest matches
# -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _candidates() -> tuple[str, ...]:
    verl_names = {k for k in verl.defaults()} | {r.verl for r in VERL_RULES if not r.verl.endswith("*")}
    return tuple(sorted(set(all_keys()) | verl_names))


def closest(key: str) -> str | None:
    """The known key (rlport's or verl's) nearest to ``key``: on the full dotted path, else the
    last part among keys of the same section, else the last part anywhere."""
    keys = _candidates()
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    if near:
        return near[0]
    head, _, leaf = key.rpartition(".")
    siblings = [k for k in keys if k.rpartition(".")[0] == head]
    near = difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in siblings], n=1, cutoff=0.6)
    if near:
        return f"{head}.{near[0]}" if head else near[0]
    by_leaf: dict[str, list[str]] = {}
    for k in keys:
        by_leaf.setdefault(k.rpartition(".")[2], []).append(k)
    near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if near:
        return max(by_leaf[near[0]], key=lambda k: difflib.SequenceMatcher(None, key, k).ratio())
    near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return near[0] if near else None


def unknown_key(key: str, where: str) -> ConfigError:
    match = closest(key)
    if match is None:
        fix = "run `rlport train --show-config` to list rlport's keys (`--show-config verl` for verl's names)"
    elif match in all_keys():
        fix = f"did you mean '{match}'? e.g. rlport train {example(match)}"
    else:
        rule = verl.rule_for(match)
        mapped = (
            f" (verl's name for rlport's {', '.join(rule.rlport)})" if rule and rule.kind == "map" else ""
        )
        fix = f"did you mean '{match}'{mapped}? e.g. rlport train {match}=..."
    return ConfigError(f"unknown config key '{key}'{where}", fix)
