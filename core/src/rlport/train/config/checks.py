"""Checks of the values alone, before any work: each value against the range or choices declared
beside its field, then settings that are each in range but do not fit together. Every problem of a
run is raised as one :class:`~rlport.errors.ConfigError`, each naming the key, the value and the
override that fixes it. Checks that look at the machine are :mod:`rlport.train.driver.preflight`'s.
"""

from __future__ import annotations

from typing import Any

from rlport.errors import ConfigError
from rlport.train.config.choices import (
    GROUPED_ESTIMATORS,
    LOGGERS,
    SEQUENCE_MEAN_LOSSES,
)
from rlport.train.config.fields import Bound
from rlport.train.config.keys import (
    all_fields,
    example,
)
from rlport.train.config.schema import (
    AlgorithmConfig,
    TrainConfig,
)


def _problem(key: str, value: Any, expected: str, fix: str) -> ConfigError:
    return ConfigError(f"config key '{key}' is {value!r}; expected {expected}", f"rlport train {fix}")


def field_problems(cfg: TrainConfig, origins: dict[str, str] | None = None) -> list[ConfigError]:
    """Values outside the range or choices declared beside their field; ``origins`` maps a setting
    to the verl key that set it, which the message then names too."""
    out = []
    for key, f in all_fields().items():
        if "range" not in f.metadata and "choices" not in f.metadata:
            continue
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        bound: Bound | None = f.metadata.get("range")
        found = None
        if bound is not None and value is not None and not bound.holds(value):
            found = _problem(key, value, bound.text(), example(key))
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            why = f" ({f.metadata['why']})" if f.metadata.get("why") else ""
            shown = ", ".join("null" if c is None else repr(c) if c == "" else str(c) for c in choices)
            found = _problem(key, value, f"one of {shown}{why}", example(key))
        if found is not None and origins and key in origins:
            found = ConfigError(f"{found.message} (set by verl's '{origins[key]}')", found.fix)
        if found is not None:
            out.append(found)
    return out


def joint_problems(cfg: TrainConfig) -> list[ConfigError]:
    """Settings that are each in range but do not fit together; the fix names the value that does."""
    d, r, a, t = cfg.data, cfg.rollout, cfg.actor, cfg.trainer
    out = []
    if 0 < cfg.algorithm.clip_ratio_c <= 1:
        out.append(
            _problem(
                "algorithm.clip_ratio_c",
                cfg.algorithm.clip_ratio_c,
                "0 (off) or above 1: a bound at or below 1 would cut the clipped surrogate itself",
                "algorithm.clip_ratio_c=3.0 (verl's dual clip; 0 turns it off)",
            )
        )
    out.extend(_policy_loss_problems(cfg.algorithm))
    out.extend(_rollout_correction_problems(cfg))
    out.extend(_float16_problems(cfg))
    if r.max_model_len and r.max_model_len <= r.max_new_tokens:
        out.append(
            _problem(
                "rollout.max_model_len",
                r.max_model_len,
                f"more than rollout.max_new_tokens ({r.max_new_tokens})",
                f"rollout.max_model_len={r.max_new_tokens + d.max_prompt_length}"
                " (rollout.max_new_tokens + data.max_prompt_length)",
            )
        )
    if len(a.betas) != 2:
        out.append(_problem("actor.betas", a.betas, "two numbers", example("actor.betas")))
    if t.workers >= 1 and d.train_batch_size % t.workers:
        fit = t.workers * max(1, d.train_batch_size // t.workers)
        out.append(
            _problem(
                "data.train_batch_size",
                d.train_batch_size,
                f"a multiple of trainer.workers ({t.workers}) so every worker gets whole prompt groups",
                f"data.train_batch_size={fit}",
            )
        )
    if t.n_gpus_per_node > 0 and t.workers != t.nnodes * t.n_gpus_per_node:
        out.append(
            _problem(
                "trainer.workers",
                t.workers,
                f"trainer.nnodes x trainer.n_gpus_per_node = {t.nnodes * t.n_gpus_per_node}",
                f"trainer.workers={t.nnodes * t.n_gpus_per_node}",
            )
        )
    if t.nnodes >= 1 and t.workers % t.nnodes:
        out.append(
            _problem(
                "trainer.workers",
                t.workers,
                f"a multiple of trainer.nnodes ({t.nnodes}), the same number of workers on every node",
                f"trainer.workers={t.nnodes * max(1, t.workers // t.nnodes)}",
            )
        )
    out.extend(_mini_batch_problems(cfg, "actor", a.ppo_mini_batch_size, a.mini_batches))
    al, c = cfg.algorithm, cfg.critic
    if al.adv_estimator in (*GROUPED_ESTIMATORS, "reinforce_plus_plus_baseline") and r.n < 2:
        out.append(
            _problem(
                "rollout.n",
                r.n,
                f"at least 2 with algorithm.adv_estimator={al.adv_estimator} (it compares the samples of a group)",
                "rollout.n=4 (or algorithm.adv_estimator=gae, PPO with a critic)",
            )
        )
    if al.adv_estimator == "gae":
        out.extend(_mini_batch_problems(cfg, "critic", c.ppo_mini_batch_size, c.mini_batches))
        if len(c.betas) != 2:
            out.append(_problem("critic.betas", c.betas, "two numbers", example("critic.betas")))
        if a.strategy == "megatron":
            out.append(
                _problem(
                    "algorithm.adv_estimator",
                    "gae",
                    "grpo with actor.strategy=megatron (the critic is built on replicated, ddp or fsdp only)",
                    "algorithm.adv_estimator=grpo (or actor.strategy=fsdp)",
                )
            )
    elif t.critic_warmup_steps:
        out.append(
            _problem(
                "trainer.critic_warmup_steps",
                t.critic_warmup_steps,
                "0 with algorithm.adv_estimator=grpo (there is no critic to warm up)",
                "trainer.critic_warmup_steps=0 (or algorithm.adv_estimator=gae)",
            )
        )
    longest = d.max_prompt_length + r.max_new_tokens
    for section in ("actor", "critic"):
        sec = getattr(cfg, section)
        if sec.use_dynamic_bsz and sec.ppo_max_token_len_per_gpu < longest:
            out.append(
                _problem(
                    f"{section}.ppo_max_token_len_per_gpu",
                    sec.ppo_max_token_len_per_gpu,
                    f"at least the longest sequence, data.max_prompt_length + rollout.max_new_tokens ({longest})",
                    f"{section}.ppo_max_token_len_per_gpu={longest}",
                )
            )
    unknown = [name for name in t.logger if name not in LOGGERS]
    if unknown:
        out.append(
            _problem(
                "trainer.logger",
                t.logger,
                f"names from {', '.join(LOGGERS)}",
                "trainer.logger=[console,jsonl]",
            )
        )
    if cfg.reward.custom and ":" not in cfg.reward.custom:
        out.append(
            _problem("reward.custom", cfg.reward.custom, "module:function", "reward.custom=my_rewards:score")
        )
    if cfg.reward.custom and cfg.reward.path:
        out.append(
            _problem(
                "reward.path",
                cfg.reward.path,
                f"unset while reward.custom={cfg.reward.custom!r} is set (one custom reward per run)",
                "reward.path= (or reward.custom=)",
            )
        )
    return out


def _policy_loss_problems(al: AlgorithmConfig) -> list[ConfigError]:
    """A policy loss's own needs: dro's beta, and the sequence mean of geo_mean and sapo where
    other terms would be aggregated differently from verl (:func:`resolve`)."""
    out = []
    if al.policy_loss == "dro" and al.policy_loss_options.dro_beta is None:
        out.append(
            _problem(
                "algorithm.policy_loss_options.dro_beta",
                None,
                "a number above 0 with algorithm.policy_loss=dro (its penalty's weight; verl asks for it too)",
                "algorithm.policy_loss_options.dro_beta=0.1",
            )
        )
    other_terms = [
        t for t, on in (("the KL loss", al.use_kl_loss), ("the entropy bonus", al.entropy_coef)) if on
    ]
    if al.policy_loss in SEQUENCE_MEAN_LOSSES and al.loss_agg_mode != "seq-mean-token-mean" and other_terms:
        out.append(
            _problem(
                "algorithm.loss_agg_mode",
                al.loss_agg_mode,
                f"seq-mean-token-mean with algorithm.policy_loss={al.policy_loss} and {' and '.join(other_terms)}: "
                f"verl takes {al.policy_loss}'s loss as a mean over sequences whatever loss_agg_mode says, and "
                "the other terms by loss_agg_mode; rlport aggregates every term by the one mode",
                "algorithm.loss_agg_mode=seq-mean-token-mean",
            )
        )
    return out


def _float16_problems(cfg: TrainConfig) -> list[ConfigError]:
    """``model.dtype=float16`` holds the trained weights in float16, and AdamW's moments and step
    in that dtype under- and overflow (a squared gradient below 6e-8 is 0, eps=1e-8 is 0, so the
    step is 0/0): the first update turns weights into nan. LoRA's adapters are float32 (peft), so
    a LoRA actor trains; the critic always trains every weight."""
    m, al = cfg.model, cfg.algorithm
    if m.dtype != "float16":
        return []
    trained = [
        what
        for what, full in (
            ("the actor (model.lora_rank=0 trains every weight)", not m.lora_rank),
            ("the critic (algorithm.adv_estimator=gae trains every weight)", al.adv_estimator == "gae"),
        )
        if full
    ]
    if not trained:
        return []
    return [
        _problem(
            "model.dtype",
            m.dtype,
            f"bfloat16 or float32 for {' and '.join(trained)}: AdamW on float16 weights under- and "
            "overflows (a squared gradient below 6e-8 and its eps 1e-8 are 0 in float16), so the first "
            "update makes the weights nan",
            "model.dtype=bfloat16 (or model.dtype=float32; or model.lora_rank=16 with an estimator "
            "other than gae: the adapters train in float32)",
        )
    ]


def _rollout_correction_problems(cfg: TrainConfig) -> list[ConfigError]:
    """The thresholds read as verl reads them, and what bypass mode needs: the engine's logprobs
    are at temperature 1 (the ratio's two sides must be of one distribution) and the loss is
    ``loss_type``'s."""
    from rlport.train.config.correction_thresholds import RS_OPTIONS, is_threshold, rs_checks, rs_options

    rc = cfg.algorithm.rollout_correction
    key = "algorithm.rollout_correction."
    out = []
    try:
        is_threshold(rc.rollout_is_threshold)
    except ValueError as exc:
        out.append(
            _problem(
                key + "rollout_is_threshold",
                rc.rollout_is_threshold,
                f"a number above 0 (truncate the weights there) or lower_upper with 0 < lower <= upper "
                f"(zero the weights outside): {exc}",
                f"{key}rollout_is_threshold=2.0 (or {key}rollout_is_threshold=0.5_5.0)",
            )
        )
    fix = (
        f"{key}rollout_rs=token_k3 {key}rollout_rs_threshold=0.05 "
        f"(or {key}rollout_rs=seq_mean_k1 {key}rollout_rs_threshold=0.5_2.0)"
    )
    if rc.rollout_rs is not None:
        try:
            rs_options(rc.rollout_rs)
        except ValueError as exc:
            expected = f"comma-separated criteria of {', '.join(RS_OPTIONS)} ({exc})"
            out.append(_problem(key + "rollout_rs", rc.rollout_rs, expected, fix))
        else:
            try:
                rs_checks(rc.rollout_rs, rc.rollout_rs_threshold)
            except ValueError as exc:
                expected = (
                    "one threshold for every criterion or one per criterion: k1 ratio bounds lower_upper "
                    f"(or one number u: 1/u to u), k2 and k3 one upper bound above 0 ({exc})"
                )
                out.append(_problem(key + "rollout_rs_threshold", rc.rollout_rs_threshold, expected, fix))
    if rc.bypass_mode and cfg.rollout.temperature != 1.0:
        out.append(
            _problem(
                "rollout.temperature",
                cfg.rollout.temperature,
                "1.0 with algorithm.rollout_correction.bypass_mode=true: the engine's logprobs are at "
                "temperature 1, the actor's at the sampling temperature, so their ratio would compare two "
                "distributions",
                f"rollout.temperature=1.0 (or {key}bypass_mode=false)",
            )
        )
    if rc.bypass_mode and cfg.algorithm.policy_loss != "vanilla":
        out.append(
            _problem(
                "algorithm.policy_loss",
                cfg.algorithm.policy_loss,
                f"vanilla with {key}bypass_mode=true: bypass mode's loss is {key}loss_type "
                "(ppo_clip or reinforce), as verl's",
                f"algorithm.policy_loss=vanilla {key}loss_type=ppo_clip (or {key}bypass_mode=false)",
            )
        )
    return out


def _mini_batch_problems(cfg: TrainConfig, section: str, prompts: int, count: int) -> list[ConfigError]:
    """``section``'s (actor's or critic's) ``ppo_mini_batch_size`` divides the batch, and its
    mini-batches are at most the sequences a worker trains on."""
    d, t = cfg.data, cfg.trainer
    out = []
    if prompts and d.train_batch_size % prompts:
        out.append(
            _problem(
                f"{section}.ppo_mini_batch_size",
                prompts,
                f"a divisor of data.train_batch_size ({d.train_batch_size})",
                f"{section}.ppo_mini_batch_size={d.train_batch_size}",
            )
        )
    mini_batches = d.train_batch_size // prompts if prompts else count or cfg.actor.mini_batches
    per_worker = d.train_batch_size // max(1, t.workers) * cfg.rollout.n
    if mini_batches and per_worker < mini_batches:
        out.append(
            _problem(
                f"{section}.mini_batches",
                mini_batches,
                f"at most the sequences per worker and step ({per_worker})",
                f"{section}.mini_batches={per_worker}",
            )
        )
    return out


def check_ranges(cfg: TrainConfig) -> None:
    """Every value of the right type but outside what the run can use, in one error."""
    raise_all([*field_problems(cfg), *joint_problems(cfg)])


def raise_all(problems: list[ConfigError]) -> None:
    """Raise ``problems`` as one :class:`ConfigError` (itself when there is one)."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    lines = [f"{len(problems)} problems in the configuration:"]
    for i, p in enumerate(problems, 1):
        lines.append(f"  {i}. {p.message}")
        if p.fix:
            lines.append(f"     fix: {p.fix}")
    raise ConfigError(
        "\n".join(lines),
        "correct each key above; `rlport train --show-config` lists rlport's keys, "
        "`--show-config verl` verl's names for them",
    )
