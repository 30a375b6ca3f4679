"""Loading a run's configuration: defaults, a ``--config`` YAML file and the command line merged
(:mod:`rlport.train.config.overrides`), checked (:mod:`rlport.train.config.checks`), then derived
(:mod:`rlport.train.config.derive`) into the concrete values every component reads.
"""

from __future__ import annotations

from operator import attrgetter
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport.train.config.checks import (
    field_problems,
    joint_problems,
    raise_all,
)
from rlport.train.config.derive import derive, workers_from_nodes
from rlport.train.config.overrides import merge
from rlport.train.config.schema import (
    TrainConfig,
)
from rlport.train.config.verl.translate import per_worker


def load_config(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | Path | None = None,
    base: TrainConfig | None = None,
    notes: list[str] | None = None,
) -> TrainConfig:
    """The default configuration (or ``base``), then ``config_file`` (YAML, rlport's or verl's
    layout), then ``overrides`` (Hydra's grammar); checked for keys, types and ranges, then
    derived (:func:`~rlport.train.config.derive.derive`). ``notes`` collects what the accepted verl keys mean here."""
    origins: dict[str, str] = {}
    global_counts: list[tuple[str, str, Any]] = []
    notes = notes if notes is not None else []
    cfg, problems = merge(
        base if base is not None else TrainConfig(),
        overrides,
        config_file=config_file,
        notes=notes,
        origins=origins,
        global_counts=global_counts,
    )
    workers_from_nodes(cfg)
    t = cfg.trainer
    given = set(origins.values())
    for verl_key, rl_key, value in global_counts:
        try:
            per, note = per_worker(verl_key, rl_key, value, t.workers, given)
        except ConfigError as exc:
            problems.append(exc)
            continue
        section, _, leaf = rl_key.rpartition(".")
        setattr(attrgetter(section)(cfg), leaf, per)
        origins[rl_key] = verl_key
        notes.append(note)
    raise_all([*problems, *field_problems(cfg, origins), *joint_problems(cfg)])
    derive(cfg)
    return cfg
