"""The ``rlport train`` configuration: the schema, its documentation and its ranges.

The schema is the dataclasses below (one per section: ``data``, ``model``, ``rollout``, ``actor``,
``critic``, ``algorithm``, ``reward``, ``trainer``). Each field is declared once with :func:`setting`: its
default, the line of documentation ``--show-config`` prints, and the range a value must lie in.
:mod:`rlport.train.overrides` merges the defaults, a ``--config`` YAML file and the command line's
dotted overrides (Hydra's grammar, as verl's ``main_ppo`` takes them) on OmegaConf structured
configs; verl's own key names are translated by :mod:`rlport.train.verl_keys`::

    rlport train data.train_files=[a.parquet,b.parquet] rollout.engine=vllm trainer.steps=50

An unknown key, a value of the wrong type or a value out of range is a :class:`ConfigError`
naming the key, the value, what was expected and the override that fixes it (every problem of a
run in one error), raised before any work starts. Checks that look at the machine (files, model
folder, installed engine) live in :mod:`rlport.train.validate`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Union

from rlport.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """The range of a number setting: ``ge``/``gt`` below, ``le``/``lt`` above; ``why`` is said
    with the error."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""

    def holds(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def text(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None
        if low and high:
            out = f"in {low}, {high}"
        elif self.ge is not None:
            out = f"at least {self.ge:g}"
        elif self.gt is not None:
            out = f"above {self.gt:g}"
        elif self.le is not None:
            out = f"at most {self.le:g}"
        else:
            out = f"below {self.lt:g}"
        return f"{out} ({self.why})" if self.why else out


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] = (),
    why: str = "",
) -> Any:
    """A documented field: ``default`` (or ``factory`` for a list or mapping), ``doc`` (one line,
    printed by ``--show-config``), a numeric range (``ge``/``gt``/``le``/``lt``) or ``choices``,
    and ``why`` the range holds. Checked by :func:`check_ranges`."""
    metadata: dict[str, Any] = {"doc": doc}
    if any(b is not None for b in (ge, gt, le, lt)):
        metadata["range"] = Bound(ge, gt, le, lt, why)
    if choices:
        metadata["choices"] = choices
        metadata["why"] = why
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


DTYPES = ("float32", "bfloat16", "float16")
#: ``algorithm.kl_penalty``: the per-token estimates of KL(actor || reference), as verl names them.
KL_PENALTIES = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")
#: ``algorithm.kl_loss_type``: the same, and with ``+`` the straight-through kinds (verl's ``k3+``):
#: the kind's value, k2's gradient
KL_LOSS_TYPES = (*KL_PENALTIES, *(f"{k}+" for k in KL_PENALTIES))
LOGGERS = ("console", "jsonl", "tensorboard", "wandb", "mlflow", "swanlab")
#: ``algorithm.adv_estimator``s that give one advantage per sequence from its group (rollout.n >= 2)
GROUPED_ESTIMATORS = ("grpo", "rloo", "opo", "gpg", "grpo_passk")
#: ... that give per-token advantages without a critic
PER_TOKEN_ESTIMATORS = ("reinforce_plus_plus", "reinforce_plus_plus_baseline", "remax")
ADV_ESTIMATORS = ("gae", *GROUPED_ESTIMATORS, *PER_TOKEN_ESTIMATORS)
#: verl's ``loss_agg_mode`` values (:mod:`rlport.train.loss_agg`)
LOSS_AGG_MODES = (
    "token-mean",
    "token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)
#: ``algorithm.policy_loss``: verl's ``policy_loss.loss_mode`` values (:mod:`rlport.train.policy_losses`)
POLICY_LOSSES = (
    "vanilla",
    "gspo",
    "gpg",
    "geo_mean",
    "cispo",
    "clip_cov",
    "kl_cov",
    "sapo",
    "dro",
    "dppo_tv",
    "dppo_kl",
)
#: ... whose loss is a mean over sequences whatever ``loss_agg_mode`` says (verl's geo_mean and sapo)
SEQUENCE_MEAN_LOSSES = ("geo_mean", "sapo")


@dataclass
class DataConfig:
    train_files: list[str] = setting(doc="parquet files in verl's layout", factory=list)
    val_files: list[str] = setting(
        doc="parquet files scored greedily for validation (trainer.test_freq)", factory=list
    )
    prompt_key: str = setting("prompt", "column holding the chat messages [{role, content}, ...]")
    train_batch_size: int = setting(8, "prompts per step (each sampled rollout.n times)", ge=1)
    max_prompt_length: int = setting(
        256, "prompts longer than this (in tokens) are dropped, with a count", ge=1
    )
    shuffle: bool = setting(True, "reshuffle the prompts every epoch (seeded by trainer.seed)")
    train_max_samples: int = setting(
        0,
        "train on at most this many prompts (0: all): a draw seeded by trainer.seed with data.shuffle, else the first",
        ge=0,
    )
    val_max_samples: int = setting(0, "validate on at most this many prompts (0: all), drawn alike", ge=0)
    val_batch_size: int = setting(
        0, "validation prompts per engine call (0: all at once); answers do not depend on it", ge=0
    )
    apply_chat_template_kwargs: dict[str, Any] = setting(
        doc="extra arguments of the tokenizer's apply_chat_template (e.g. enable_thinking: false)",
        factory=dict,
    )


@dataclass
class ModelConfig:
    path: str = setting("", "a local Hugging Face causal-LM folder (config.json + weights + tokenizer)")
    dtype: str = setting("float32", "the actor's and the engine's dtype", choices=DTYPES)
    attn_implementation: str = setting(
        "rlport", '"rlport" routes attention through the device plugin\'s backend'
    )
    trust_remote_code: bool = setting(
        False,
        "run the model folder's own Python code (config.json auto_map) in training and rollout; "
        "only for a folder you trust",
    )
    lora_rank: int = setting(
        0, "0: train every parameter; > 0: LoRA adapters of this rank (peft), the rest frozen", ge=0
    )
    lora_alpha: float = setting(16.0, "LoRA: the adapters' scale is lora_alpha / lora_rank", gt=0)
    target_modules: list[str] = setting(
        doc="LoRA: the modules adapted, by name ([all-linear]: every linear layer but the output)",
        factory=lambda: ["all-linear"],
    )
    exclude_modules: list[str] = setting(doc="LoRA: modules left without adapters", factory=list)
    lora_adapter_path: str = setting(
        "", 'LoRA: start from the adapters in this folder (PeftModel.save_pretrained); "": new ones'
    )


@dataclass
class ValKwargsConfig:
    """How validation answers are drawn (verl's ``rollout.val_kwargs``): greedy unless ``do_sample``."""

    do_sample: bool = setting(False, "sample the validation answers; false: greedy (temperature 0)")
    temperature: float = setting(0.0, "do_sample: the validation temperature", ge=0)
    top_p: float = setting(1.0, "do_sample: nucleus sampling mass", gt=0, le=1)
    top_k: int = setting(0, "do_sample: keep the k most likely tokens; 0 disables top-k", ge=0)
    n: int = setting(
        1, "answers per validation prompt; above 1 adds best@n and worst@n beside the mean", ge=1
    )


@dataclass
class RolloutConfig:
    engine: str = setting(
        "hf", "a rollout engine offered by a plugin (`rlport plugins` lists them): hf | vllm"
    )
    n: int = setting(
        8,
        "samples per prompt: the GRPO group size (at least 2 with algorithm.adv_estimator=grpo)",
        ge=1,
    )
    temperature: float = setting(1.0, "sampling temperature", gt=0, why="training needs sampling")
    top_p: float = setting(
        1.0, "nucleus sampling: keep the smallest set of tokens with this mass", gt=0, le=1
    )
    top_k: int = setting(0, "keep the k most likely tokens; 0 disables top-k", ge=0)
    max_new_tokens: int = setting(32, "response length limit, in tokens", ge=1)
    max_model_len: int = setting(
        0, "prompt + response limit given to the engine; 0: data.max_prompt_length + max_new_tokens", ge=0
    )
    sleep: bool = setting(True, "release the engine's weights and KV cache while the actor trains")
    options: dict[str, Any] = setting(doc="engine-specific arguments (rollout.options.x=y)", factory=dict)
    val_kwargs: ValKwargsConfig = setting(
        doc="the validation answers (data.val_files)", factory=ValKwargsConfig
    )


@dataclass
class FsdpConfig:
    param_dtype: str = setting(
        "",
        'compute dtype of the gathered parameters; "": the stored dtype (model.dtype)',
        choices=("", *DTYPES),
    )
    reduce_dtype: str = setting(
        "float32", 'dtype of the gradient reduce-scatter; "": the parameters\' dtype', choices=("", *DTYPES)
    )
    param_offload: bool = setting(
        False, "parameters, gradients and optimizer state on the host (CPUOffloadPolicy)"
    )
    optimizer_offload: bool = setting(
        False,
        "the optimizer state on the host: FSDP2 keeps it with the parameters, so it needs param_offload",
    )


@dataclass
class MegatronConfig:
    tensor_model_parallel_size: int = setting(1, "ranks one layer's matrices are split over", ge=1)
    pipeline_model_parallel_size: int = setting(1, "stages the layers are split into", ge=1)
    virtual_pipeline_model_parallel_size: int | None = setting(
        None, "model chunks per stage (interleaved); null: one", ge=1
    )
    context_parallel_size: int = setting(1, "ranks one sequence is split over", ge=1)
    expert_model_parallel_size: int = setting(1, "ranks the experts of an MoE layer are split over", ge=1)


@dataclass
class LrScheduleConfig:
    """How a model's learning rate moves over the run: one step of the schedule per trainer step
    that updates the model (verl's ``optim.lr_scheduler_type`` and its warm-up keys)."""

    type: str = setting(
        "constant",
        "constant: the rate after warm-up; cosine: then falls to min_lr_ratio x the rate by the last step",
        choices=("constant", "cosine"),
    )
    warmup_steps: int = setting(
        0, "steps over which the rate rises linearly from 0; 0: warmup_steps_ratio x trainer.steps", ge=0
    )
    warmup_steps_ratio: float = setting(0.0, "the warm-up as a share of trainer.steps", ge=0, le=1)
    min_lr_ratio: float = setting(0.0, "cosine: the rate at the end, as a share of the rate", ge=0, le=1)
    num_cycles: float = setting(
        0.5, "cosine: waves over the run; 0.5: one fall from the rate to the end", gt=0
    )


@dataclass
class UpdateConfig:
    """How a trained model (``actor``, ``critic``) is updated: its AdamW optimizer and schedule,
    and how each step's rollouts are cut into updates and micro-batches. Both sections have these
    settings; :class:`rlport.train.trained.TrainedModel` reads them for either."""

    fsdp_config: FsdpConfig = setting(doc="actor.strategy=fsdp only", factory=FsdpConfig)
    lr: float = setting(1e-5, "AdamW learning rate", gt=0)
    lr_schedule: LrScheduleConfig = setting(doc="warm-up and decay of lr", factory=LrScheduleConfig)
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0)
    betas: list[float] = setting(doc="AdamW betas", factory=lambda: [0.9, 0.999])
    grad_clip: float = setting(1.0, "max gradient norm; 0 disables clipping", ge=0)
    ppo_epochs: int = setting(1, "passes over each step's rollouts", ge=1)
    mini_batches: int = setting(
        1, "optimizer updates per epoch (the step's rollouts split this many ways)", ge=1
    )
    ppo_mini_batch_size: int = setting(
        0,
        "prompts per optimizer update, as verl counts them; 0: use mini_batches "
        "(else mini_batches = data.train_batch_size / this)",
        ge=0,
    )
    micro_batch_size: int = setting(16, "sequences per forward/backward (gradients accumulate)", ge=1)
    use_dynamic_bsz: bool = setting(
        False, "micro-batches by token budget (ppo_max_token_len_per_gpu) instead of micro_batch_size"
    )
    ppo_max_token_len_per_gpu: int = setting(
        16384, "use_dynamic_bsz: tokens per micro-batch (sequences x longest, padding included)", ge=1
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in the backward pass (less memory, more compute)"
    )


@dataclass
class ActorConfig(UpdateConfig):
    strategy: str = setting(
        "", 'replicated | ddp | fsdp | megatron (the critic\'s too); "": fsdp with trainer.workers > 1'
    )
    megatron: MegatronConfig = setting(doc="actor.strategy=megatron only", factory=MegatronConfig)
    offload: bool | None = setting(None, "park actor/reference weights during rollout; null: only off-host")


@dataclass
class CriticConfig(UpdateConfig):
    """PPO's value model (``algorithm.adv_estimator=gae``). It trains on ``actor.strategy``; where
    a setting differs from the actor's, verl's critic default is kept."""

    path: str = setting(
        "", 'the value model\'s Hugging Face folder (a causal LM; a value head is added); "": model.path'
    )
    mini_batches: int = setting(0, "critic updates per epoch; 0: actor.mini_batches", ge=0)
    ppo_mini_batch_size: int = setting(
        0, "prompts per critic update, as verl counts them; 0: as many updates as the actor's", ge=0
    )
    ppo_max_token_len_per_gpu: int = setting(
        32768, "use_dynamic_bsz: tokens per micro-batch (sequences x longest, padding included)", ge=1
    )
    cliprange_value: float = setting(
        0.5, "new values are clipped to the rollout's values +- this in the value loss", ge=0
    )
    loss_agg_mode: str = setting(
        "token-mean",
        "how the value loss's tokens become the loss (as algorithm.loss_agg_mode)",
        choices=LOSS_AGG_MODES,
    )


@dataclass
class KlCtrlConfig:
    type: str = setting(
        "fixed",
        "fixed: kl_coef throughout; adaptive: steered towards target_kl",
        choices=("fixed", "adaptive"),
    )
    kl_coef: float = setting(0.001, "the (initial) coefficient of the KL in the reward", ge=0)
    target_kl: float = setting(0.1, "adaptive: the KL per token the coefficient steers towards", gt=0)
    horizon: int = setting(10000, "adaptive: rollouts over which the coefficient adapts", ge=1)


@dataclass
class PolicyLossOptions:
    """The settings of verl's other policy losses (verl's ``actor.policy_loss.*``, and the actor's
    ``tau_pos`` / ``tau_neg``); each is read only by the loss it names."""

    clip_cov_ratio: float = setting(
        0.0002, "clip_cov: at most this share of a micro-batch's tokens lose their gradient", gt=0, le=1
    )
    clip_cov_lb: float = setting(1.0, "clip_cov: a token is a candidate if its covariance is above this")
    clip_cov_ub: float = setting(5.0, "clip_cov: ... and below this")
    kl_cov_ratio: float = setting(
        0.0002,
        "kl_cov: the share of a micro-batch's tokens (highest covariance) given the KL penalty",
        gt=0,
        le=1,
    )
    ppo_kl_coef: float = setting(0.1, "kl_cov: the penalty's weight, times |logp - old_logp|", ge=0)
    tau_pos: float = setting(1.0, "sapo: the gate's temperature on tokens with a positive advantage", gt=0)
    tau_neg: float = setting(1.05, "sapo: ... with a zero or negative advantage", gt=0)
    dro_beta: float | None = setting(
        None,
        "dro: the weight of the quadratic penalty 0.5 (logp - old_logp)^2; needed with policy_loss=dro",
        gt=0,
    )


#: ``algorithm.rollout_correction.rollout_is``: the importance weights' level
IS_LEVELS = (None, "token", "sequence")
#: ``algorithm.rollout_correction.loss_type``: the policy loss of bypass mode
BYPASS_LOSSES = ("ppo_clip", "reinforce")


@dataclass
class RolloutCorrectionConfig:
    """verl's rollout correction (:mod:`rlport.train.rollout_correction`): importance weights and
    rejection of tokens by the log-ratio of the training policy to the engine's, or bypass mode
    (the engine's logprobs as the old ones). Off (verl's defaults) unless rollout_is, rollout_rs
    or bypass_mode is set."""

    rollout_is: str | None = setting(
        None,
        "importance weights on the policy loss: token (each token's ratio), sequence (the product "
        "of its ratios); null: none",
        choices=IS_LEVELS,
    )
    rollout_is_threshold: str = setting(
        "2.0",
        "a number: weights truncated at it (TIS); lower_upper (0.5_5.0): weights outside [lower, upper] "
        "are 0 (IcePop); quote it in YAML",
    )
    rollout_is_batch_normalize: bool = setting(
        False, "divide the weights by their mean over the step's batch (every worker's tokens)"
    )
    rollout_rs: str | None = setting(
        None,
        "reject tokens or sequences: comma-separated criteria token_k1..k3, seq_sum_k1..k3, "
        "seq_mean_k1..k3, seq_max_k2, seq_max_k3 (k1 -log r, k2 (log r)^2/2, k3 r-1-log r); null: none",
    )
    rollout_rs_threshold: str | None = setting(
        None,
        "one bound for every criterion, or one per criterion (comma-separated); k1 criteria take "
        "ratio bounds lower_upper (one number u: 1/u to u)",
    )
    bypass_mode: bool = setting(
        False,
        "the engine's logprobs are the old ones (no recomputation); the loss is loss_type "
        "(needs rollout.temperature=1 and algorithm.policy_loss=vanilla)",
    )
    loss_type: str = setting(
        "ppo_clip",
        "bypass_mode's loss: ppo_clip (the ratio to the engine, clipped) or reinforce (-w A logp)",
        choices=BYPASS_LOSSES,
    )


@dataclass
class AlgorithmConfig:
    adv_estimator: str = setting(
        "grpo",
        "grpo: group-relative advantages; gae: PPO with a critic (critic.*) and GAE; rloo, opo, gpg, "
        "grpo_passk, reinforce_plus_plus, reinforce_plus_plus_baseline, remax: verl's others",
        choices=ADV_ESTIMATORS,
    )
    gamma: float = setting(1.0, "GAE's discount per token", ge=0, le=1)
    lam: float = setting(1.0, "GAE's lambda (1: Monte Carlo returns, 0: one-step TD)", ge=0, le=1)
    norm_adv_by_std: bool = setting(
        True, "GRPO divides by the group's std; false gives Dr. GRPO-style advantages"
    )
    adv_epsilon: float = setting(1e-6, "added to the group std", gt=0)
    clip_ratio_low: float = setting(
        0.2,
        "ratio is clipped to [1 - low, 1 + high]; 1 or more: no lower clip (verl's CISPO example takes 10); "
        "dppo_tv, dppo_kl: their divergence thresholds",
        ge=0,
    )
    clip_ratio_high: float = setting(0.2, "upper clip of the ratio", ge=0)
    clip_ratio_c: float = setting(
        0.0,
        "dual-clip PPO: a token with a negative advantage loses at most clip_ratio_c x |advantage| "
        "(verl's default is 3); 0: off, PPO's plain clipped surrogate; dppo_tv, dppo_kl: their ratio's cap (0: none)",
        ge=0,
    )
    policy_loss: str = setting(
        "vanilla",
        "vanilla: PPO's clipped surrogate (dual clip with clip_ratio_c); gspo: clipped on the sequence's ratio; "
        "gpg: -A logp; geo_mean, cispo, clip_cov, kl_cov, sapo, dro, dppo_tv, dppo_kl: verl's others "
        "(settings in policy_loss_options; docs/train.md)",
        choices=POLICY_LOSSES,
        why="verl's loss_mode=bypass_mode is algorithm.rollout_correction.bypass_mode=true",
    )
    policy_loss_options: PolicyLossOptions = setting(
        doc="the settings of clip_cov, kl_cov, sapo and dro", factory=PolicyLossOptions
    )
    loss_agg_mode: str = setting(
        "token-mean",
        "how the policy loss's tokens become the loss: token-mean, token-sum, seq-mean-token-mean, "
        "seq-mean-token-sum, seq-mean-token-sum-norm (policy_loss geo_mean and sapo: always seq-mean-token-mean, as verl)",
        choices=LOSS_AGG_MODES,
    )
    loss_scale_factor: int = setting(
        0, "seq-mean-token-sum-norm divides by this; 0: rollout.max_new_tokens", ge=0
    )
    use_kl_loss: bool = setting(False, "add kl_coef * KL(actor || reference) to the loss")
    kl_coef: float = setting(0.001, "weight of the KL loss", ge=0)
    kl_loss_type: str = setting(
        "low_var_kl",
        "the KL loss's estimate: kl (k1), abs, mse (k2), low_var_kl (k3); with a trailing +, that "
        "value with k2's gradient (straight-through, verl's k3+)",
        choices=KL_LOSS_TYPES,
    )
    entropy_coef: float = setting(0.0, "subtract entropy_coef * entropy from the loss")
    use_kl_in_reward: bool = setting(
        False, "subtract kl_ctrl.kl_coef * KL(actor || reference) from every token's reward"
    )
    kl_penalty: str = setting(
        "kl", "the KL estimate in the reward: kl (k1), abs, mse (k2), low_var_kl (k3)", choices=KL_PENALTIES
    )
    kl_ctrl: KlCtrlConfig = setting(doc="the coefficient of the KL in the reward", factory=KlCtrlConfig)
    rollout_correction: RolloutCorrectionConfig = setting(
        doc="importance weights, rejection and bypass mode for the engine's logprobs (verl's keys)",
        factory=RolloutCorrectionConfig,
    )


@dataclass
class RewardConfig:
    custom: str = setting(
        "", "module:function (data_source, solution_str, ground_truth, extra_info) -> float"
    )
    path: str = setting(
        "", "a .py file holding a reward function for every source (verl's custom_reward_function.path)"
    )
    name: str = setting("compute_score", "the function's name in reward.path")


@dataclass
class TrainerConfig:
    steps: int = setting(
        50, "optimizer steps (each: rollout, reward, update, weight sync); see total_epochs", ge=1
    )
    total_epochs: int = setting(
        0, "passes over the training data; >0 sets steps = epochs x (prompts // train_batch_size)", ge=0
    )
    total_training_steps: int = setting(0, "if above 0, the number of steps (wins over total_epochs)", ge=0)
    workers: int = setting(1, "data-parallel workers; more than 1 runs Ray actors", ge=1)
    nnodes: int = setting(
        1, "nodes the workers are spread over (verl's key); the workers split evenly over them", ge=1
    )
    n_gpus_per_node: int = setting(
        0,
        "devices (one worker each) per node, verl's key: sets trainer.workers to nnodes x this; "
        "0: trainer.workers / trainer.nnodes",
        ge=0,
    )
    seed: int = setting(0, "seeds the data order, the model sampling and the demo")
    output_dir: str = setting("outputs/rlport", "metrics.jsonl, reward_curve.png and checkpoints/ go here")
    save_every: int = setting(0, "save a checkpoint every N steps; 0: only at the end", ge=0)
    max_checkpoints_to_keep: int = setting(
        0, "keep only the newest N checkpoints (older ones are deleted after each save); 0: all", ge=0
    )
    rollout_data_dir: str = setting(
        "", "write each step's rollouts (input, output, gts, score, step) to DIR/STEP.jsonl, as verl"
    )
    validation_data_dir: str = setting("", "write every validation's answers to DIR/STEP.jsonl, as verl")
    critic_warmup_steps: int = setting(
        0, "the first N steps update only the critic (algorithm.adv_estimator=gae)", ge=0
    )
    test_freq: int = setting(0, "validate on data.val_files every N steps (and at the end); 0: never", ge=0)
    val_before_train: bool = setting(False, "validate once before the first step")
    val_only: bool = setting(False, "validate once on data.val_files and stop: no training, no checkpoint")
    log_val_generations: int = setting(
        0,
        "answers to log at each validation (the same prompts every time): output_dir/val_generations.jsonl "
        "and the tensorboard, wandb, mlflow, swanlab loggers",
        ge=0,
    )
    resume_from: str = setting(
        "", "a checkpoint folder (output_dir/checkpoints/step_N), or latest: the newest complete one"
    )
    logger: list[str] = setting(
        doc="where metrics go: console, jsonl, tensorboard, wandb, mlflow, swanlab",
        factory=lambda: ["console", "jsonl"],
    )
    project_name: str = setting("rlport", "the project, for wandb, mlflow, swanlab")
    experiment_name: str = setting("", "the run's name; \"\": the output folder's name")
    ray_address: str = setting(
        "", '"": start Ray on this machine; "auto" or host:port: join a running cluster'
    )
    ray_num_cpus: int = setting(0, "CPUs for a local Ray; 0: as many as the machine has", ge=0)
    cpus_per_worker: float = setting(1.0, "Ray CPUs each worker requests", gt=0)
    startup_timeout_s: float = setting(
        120.0, "seconds to wait for Ray's placement and the workers' rendezvous", gt=0
    )
    progress: bool = setting(True, "a live progress bar (off in logs and tests)")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -------------------------------------------------------------------------------------------------
# Keys, their types and documentation
# -------------------------------------------------------------------------------------------------


def _fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """``cls``'s fields and their types: its own first, then those it shares through a base
    (:class:`UpdateConfig`), so ``--show-config`` opens ``actor`` with its strategy."""
    hints = typing.get_type_hints(cls)
    shared = {
        f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)
    }
    fields = dataclasses.fields(cls)
    ordered = [f for f in fields if f.name not in shared] + [f for f in fields if f.name in shared]
    return [(f, hints[f.name]) for f in ordered]


def all_keys(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key of the configuration and its type."""
    out: dict[str, Any] = {}
    for f, tp in _fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.update(all_keys(tp, key + "."))
        else:
            out[key] = tp
    return out


def all_fields(cls: type = TrainConfig, prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    """Every dotted key and its dataclass field (``field.metadata`` holds doc, range, choices);
    sections included."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for f, tp in _fields(cls):
        key = f"{prefix}{f.name}"
        out[key] = f
        if dataclasses.is_dataclass(tp):
            out.update(all_fields(tp, key + "."))
    return out


def doc(key: str) -> str:
    """The documentation of dotted ``key`` ("" when it has none)."""
    f = all_fields().get(key)
    return str(f.metadata.get("doc", "")) if f is not None else ""


def default_value(key: str) -> Any:
    """The default of dotted ``key``."""
    obj: Any = TrainConfig()
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def optional_inner(tp: Any) -> Any:
    """``T`` for ``T | None``, else ``tp``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType) and type(None) in args:
        return f"{type_name(optional_inner(tp))} or null"
    if origin is list:
        return f"a list of {type_name(args[0])} ([a,b,...])"
    if origin is dict:
        return "a mapping (set entries as key.sub=value)"
    if dataclasses.is_dataclass(tp):
        return "a section (set its keys as section.key=value)"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(
        tp, str(tp)
    )


def example(key: str) -> str:
    """``key=<a value that works>``: the default where it is a plain value."""
    tp = all_keys().get(key)
    if tp is None:
        return f"{key}=..."
    value = default_value(key)
    inner = optional_inner(tp)
    if typing.get_origin(inner) is list:
        return f"{key}=[{','.join(str(v) for v in value)}]" if value else f"{key}=[a,b]"
    if typing.get_origin(inner) is dict:
        return f"{key}.NAME=VALUE"
    if value is None or value == "":
        named = [c for c in all_fields()[key].metadata.get("choices", ()) if c not in (None, "")]
        if named:  # a setting that is off by default: its first choice
            return f"{key}={named[0]}"
        return f"{key}=" + {int: "1", float: "0.5", bool: "true", str: "VALUE"}.get(inner, "VALUE")
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"


# -------------------------------------------------------------------------------------------------
# Ranges
# -------------------------------------------------------------------------------------------------


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


def _rollout_correction_problems(cfg: TrainConfig) -> list[ConfigError]:
    """The thresholds read as verl reads them, and what bypass mode needs: the engine's logprobs
    are at temperature 1 (the ratio's two sides must be of one distribution) and the loss is
    ``loss_type``'s."""
    from rlport.train.correction_thresholds import RS_OPTIONS, is_threshold, rs_checks, rs_options

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


def load_config(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | Path | None = None,
    base: TrainConfig | None = None,
    notes: list[str] | None = None,
) -> TrainConfig:
    """The default configuration (or ``base``), then ``config_file`` (YAML, rlport's or verl's
    layout), then ``overrides`` (Hydra's grammar); checked for keys, types and ranges, then
    resolved (:func:`resolve`). ``notes`` collects what the accepted verl keys mean here."""
    from rlport.train.overrides import merge
    from rlport.train.verl_keys import per_worker

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
    t = cfg.trainer
    if t.n_gpus_per_node > 0 and t.nnodes >= 1 and t.workers == 1:
        t.workers = t.nnodes * t.n_gpus_per_node  # verl counts devices per node, rlport workers
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
    resolve(cfg)
    return cfg


def resolve(cfg: TrainConfig) -> None:
    """Settings given in another unit become rlport's: verl's ``ppo_mini_batch_size`` (prompts per
    update) sets ``actor.mini_batches`` (and the critic's); ``critic.path=""`` is ``model.path``;
    ``algorithm.policy_loss`` geo_mean and sapo aggregate as ``seq-mean-token-mean``, as verl's do;
    ``rollout.max_model_len=0`` is prompt + response; ``~`` in
    paths is the home folder."""
    a, d, r = cfg.actor, cfg.data, cfg.rollout
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
