"""Derived settings, computed in one place, once, before the startup summary: what a setting given
in another unit, or left to its default, becomes. After :func:`derive` every component reads concrete
values.
"""

from __future__ import annotations

import os

from rlport.train.config.choices import SEQUENCE_MEAN_LOSSES
from rlport.train.config.schema import TrainConfig
from rlport.types import DeviceInfo


def default_strategy(workers: int) -> str:
    """``actor.strategy`` left empty: ``fsdp`` over more than one worker, else ``replicated``."""
    return "fsdp" if workers > 1 else "replicated"


def strategy_of(cfg: TrainConfig, workers: int | None = None) -> str:
    """The strategy a run trains on: ``actor.strategy``, or :func:`default_strategy` for
    ``workers`` (``trainer.workers`` unless given) when it is empty. The critic trains on the same."""
    return cfg.actor.strategy or default_strategy(cfg.trainer.workers if workers is None else workers)


def offload_of(cfg: TrainConfig, device: DeviceInfo, workers: int | None = None) -> bool:
    """Whether the actor's weights are parked on the host during rollout: ``actor.offload`` when
    set, else the device plugin's ``DeviceInfo.offload_by_default``, which never applies to a
    sharded strategy (fsdp, megatron: no whole module to park)."""
    if cfg.actor.offload is not None:
        return cfg.actor.offload
    return device.offload_by_default and strategy_of(cfg, workers) not in ("fsdp", "megatron")


def derive_for_device(cfg: TrainConfig, device: DeviceInfo) -> None:
    """The settings whose default the device plugin decides, once the runtime has chosen it:
    ``actor.offload`` (:func:`offload_of`). Idempotent, like :func:`derive`."""
    cfg.actor.offload = offload_of(cfg, device)


def workers_from_nodes(cfg: TrainConfig) -> None:
    """verl counts devices per node (``trainer.nnodes`` x ``trainer.n_gpus_per_node``), rlport
    workers: the product is ``trainer.workers`` unless that was given. Runs before the checks,
    which divide batches by the workers."""
    t = cfg.trainer
    if t.n_gpus_per_node > 0 and t.nnodes >= 1 and t.workers == 1:
        t.workers = t.nnodes * t.n_gpus_per_node


def derive(cfg: TrainConfig) -> None:
    """Settings given in another unit become rlport's: verl's ``ppo_mini_batch_size`` (prompts per
    update) sets ``actor.mini_batches`` (and the critic's); ``critic.path=""`` is ``model.path``;
    ``algorithm.policy_loss`` geo_mean and sapo aggregate as ``seq-mean-token-mean``, as verl's do;
    ``rollout.max_model_len=0`` is prompt + response; ``~`` in paths is the home folder.
    Idempotent: deriving a derived configuration changes nothing. ``actor.strategy=""`` stays as
    given (it is what ``--show-config`` and verl's view print); :func:`strategy` reads it."""
    a, d, r = cfg.actor, cfg.data, cfg.rollout
    workers_from_nodes(cfg)
    d.train_files = [os.path.expanduser(f) for f in d.train_files]  # verl's files start with ~/
    d.val_files = [os.path.expanduser(f) for f in d.val_files]
    cfg.model.path = os.path.expanduser(cfg.model.path)
    if a.ppo_mini_batch_size:
        a.mini_batches = d.train_batch_size // a.ppo_mini_batch_size
    if cfg.algorithm.policy_loss in SEQUENCE_MEAN_LOSSES:
        # verl ignores loss_agg_mode for these; with no other term (joint_problems) this is its loss
        cfg.algorithm.loss_agg_mode = "seq-mean-token-mean"
    c = cfg.critic
    c.path = os.path.expanduser(c.path) if c.path else cfg.model.path
    if c.ppo_mini_batch_size:
        c.mini_batches = d.train_batch_size // c.ppo_mini_batch_size
    elif c.mini_batches == 0:
        c.mini_batches = a.mini_batches
    if r.max_model_len == 0:
        r.max_model_len = d.max_prompt_length + r.max_new_tokens
