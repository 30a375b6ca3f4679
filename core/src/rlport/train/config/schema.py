"""The ``rlport train`` configuration: the schema, its documentation and its ranges.

The schema is the dataclasses below (one per section: ``data``, ``model``, ``rollout``, ``actor``,
``critic``, ``algorithm``, ``reward``, ``trainer``). Each field is declared once with :func:`setting`: its
default, the line of documentation ``--show-config`` prints, and the range a value must lie in.
:mod:`rlport.train.config.overrides` merges the defaults, a ``--config`` YAML file and the command line's
dotted overrides (Hydra's grammar, as verl's ``main_ppo`` takes them) on OmegaConf structured
configs; verl's own key names are translated by :mod:`rlport.train.config.verl`::

    rlport train data.train_files=[a.parquet,b.parquet] rollout.engine=vllm trainer.steps=50

An unknown key, a value of the wrong type or a value out of range is a :class:`ConfigError`
naming the key, the value, what was expected and the override that fixes it (every problem of a
run in one error), raised before any work starts. Checks that look at the machine (files, model
folder, installed engine) live in :mod:`rlport.train.driver.preflight`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rlport.train.config.choices import (
    ADV_ESTIMATORS,
    BYPASS_LOSSES,
    DTYPES,
    IS_LEVELS,
    KL_LOSS_TYPES,
    KL_PENALTIES,
    LOSS_AGG_MODES,
    POLICY_LOSSES,
)
from rlport.train.config.fields import setting


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
    settings; :class:`rlport.train.models.trained.TrainedModel` reads them for either."""

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
    offload: bool | None = setting(
        None, "park actor/reference weights during rollout; null: as the device plugin decides"
    )


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


@dataclass
class RolloutCorrectionConfig:
    """verl's rollout correction (:mod:`rlport.train.algos.rollout_correction`): importance weights and
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
