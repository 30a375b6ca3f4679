"""verl's configuration keys beside rlport's own: the one table that says what each becomes.

verl's ``main_ppo`` takes ``actor_rollout_ref.actor.optim.lr=1e-6 trainer.n_gpus_per_node=8 ...``.
Every key of verl's composed ``ppo_trainer.yaml`` (its defaults ship as ``verl_defaults.yaml``,
regenerated with ``python -m rlport.train.config.verl_keys PATH/_generated_ppo_trainer.yaml``) is covered
by one rule here:

- :func:`Map`: the value goes to an rlport setting (converted where verl counts differently);
- :func:`Accept`: rlport already behaves as the value asks (listed ``values``), so there is no
  setting; any other value, verl's default included, is refused with the reason;
- :func:`Refuse`: rlport does not do it; the reason says why, or which issue plans it. A refused
  key set to verl's own default is accepted (a full verl config file names them all), and has no
  effect.

:func:`translate` applies the table to one key; ``docs/from-verl.md``'s key table is generated
from it (:func:`markdown_table`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.train.config.choices import POLICY_LOSSES

VERL_VERSION = "0.9.1"
DEFAULTS_FILE = Path(__file__).with_name("verl_defaults.yaml")


@dataclass(frozen=True)
class Rule:
    """One row of the table. ``verl`` is a dotted key, or a prefix ending in ``.*`` (every key
    below it)."""

    verl: str
    kind: str  # "map" | "accept" | "refuse"
    rlport: tuple[str, ...] = ()
    convert: Callable[[Any], Any] | None = None
    back: Callable[[Any], Any] | None = None
    values: tuple[Any, ...] = ()
    reason: str = ""
    #: verl's current key, where verl deprecates this one but still honours it
    deprecated_for: str = ""
    #: verl counts this value over all data-parallel ranks; rlport's setting is per worker
    global_count: bool = False

    def converted(self, value: Any) -> Any:
        """``value`` through ``convert``; a value it cannot take (``X`` for a count) passes as it
        is, for the setting's own type check to report with the setting's name and an example."""
        if self.convert is None:
            return value
        try:
            return self.convert(value)
        except (TypeError, ValueError):
            return value

    def matches(self, key: str) -> bool:
        if self.verl.endswith(".*"):
            return key.startswith(self.verl[:-1])
        return key == self.verl


def Map(
    verl: str,
    *rlport: str,
    convert: Callable[[Any], Any] | None = None,
    back: Callable[[Any], Any] | None = None,
    note: str = "",
) -> Rule:
    """``verl``'s value sets ``rlport`` (each of them), through ``convert``; ``back`` turns the
    rlport value into verl's for ``--show-config verl``."""
    return Rule(verl, "map", rlport, convert, back, reason=note)


def Deprecated(verl: str, current: str, *rlport: str, global_count: bool = False, note: str = "") -> Rule:
    """A key verl marks deprecated but still honours, as verl does: its value sets ``rlport``
    (``global_count``: verl's count over all ranks, divided by the workers as verl divides it by
    its data-parallel size), with a note naming ``current``, verl's key for it now; setting both
    is refused, as in verl. With no ``rlport`` the value has no effect here (``note`` says why)."""
    kind = "map" if rlport else "accept"
    return Rule(
        verl, kind, rlport, _unless_null, reason=note, deprecated_for=current, global_count=global_count
    )


def Accept(verl: str, reason: str, values: tuple[Any, ...] = ()) -> Rule:
    """rlport behaves as ``values`` ask (``()``: as any value asks: it has no effect here)."""
    return Rule(verl, "accept", values=values, reason=reason)


def Refuse(verl: str, reason: str) -> Rule:
    return Rule(verl, "refuse", reason=reason)


class Skip:
    """A converted value that leaves the rlport setting at its default (verl's ``null``)."""


SKIP = Skip()


def _unless_null(value: Any) -> Any:
    return SKIP if value is None else value


def _positive_or_zero(value: Any) -> Any:
    """verl's ``-1`` / ``null`` for "off" is rlport's 0."""
    if value is None:
        return 0
    return 0 if int(value) < 0 else value


def _files(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """verl's module names: one name (``all-linear``), a list, or ``null`` for none."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _text(value: Any) -> Any:
    """A threshold verl takes as a number or a string (``2.0``, ``0.5_5.0``): rlport's string."""
    return value if value is None or isinstance(value, str) else str(value)


def _path_or_empty(value: Any) -> Any:
    return "" if value is None else value


def _strategy(value: Any) -> Any:
    return "" if value in ("fsdp", "fsdp2") else value


def _resume_mode(value: Any) -> Any:
    return "latest" if value == "auto" else SKIP


def _loggers(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _warmup(value: Any) -> Any:
    """verl trains only the critic while the step (from 1) is below ``critic_warmup``: its N is
    rlport's N - 1 first steps."""
    return max(0, int(value) - 1) if value else 0


def _schedule(verl: str, rlport: str) -> list[Rule]:
    """verl's learning-rate schedule keys under ``verl`` (``...optim``) onto ``rlport``
    (``actor.lr_schedule`` or ``critic.lr_schedule``): the same schedules as verl's
    ``get_constant_schedule_with_warmup`` / ``get_cosine_schedule_with_warmup``."""
    return [
        Map(f"{verl}.lr_scheduler_type", f"{rlport}.type"),
        Map(
            f"{verl}.warmup_style",
            f"{rlport}.type",
            convert=_unless_null,
            note="deprecated in verl for lr_scheduler_type",
        ),
        Map(
            f"{verl}.lr_warmup_steps",
            f"{rlport}.warmup_steps",
            convert=_positive_or_zero,
            note="verl's -1 (take lr_warmup_steps_ratio) is rlport's 0",
        ),
        Map(f"{verl}.lr_warmup_steps_ratio", f"{rlport}.warmup_steps_ratio"),
        Map(f"{verl}.min_lr_ratio", f"{rlport}.min_lr_ratio", convert=_unless_null),
        Map(f"{verl}.num_cycles", f"{rlport}.num_cycles"),
        Accept(
            f"{verl}.total_training_steps",
            "verl and rlport both set it to the run's steps (trainer.steps, total_epochs or total_training_steps)",
        ),
        Accept(
            f"{verl}.zero_indexed_step",
            "rlport counts the schedule's steps from 0, as verl's default does",
            (True,),
        ),
    ]


#: verl's actor.megatron sizes that rlport's MegatronConfig has
MEGATRON_SIZES = (
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "virtual_pipeline_model_parallel_size",
    "context_parallel_size",
    "expert_model_parallel_size",
)
LOGPROB_CHUNKS = (
    "rlport recomputes logprobs in the actor's micro-batches (actor.micro_batch_size, or "
    "actor.ppo_max_token_len_per_gpu with actor.use_dynamic_bsz); the value has no effect"
)
REFERENCE_WHOLE = "rlport holds the reference model whole beside each actor rank (algorithm.use_kl_loss)"
CRITIC_SHARED = "the critic is built like the actor (actor.strategy, model.dtype); the value has no effect"
PROFILER = (
    "rlport does not implement verl's profiler settings because profiling belongs to the device "
    "plugin's tools; wrap rlport.train.driver.trainer.Trainer.fit in torch.profiler instead"
)
PARALLEL = (
    "rlport does not implement tensor, pipeline, expert or sequence parallelism here because its "
    "rollout engines run one replica per worker and replicated | ddp | fsdp are data-parallel; "
    "model parallelism is actor.strategy=megatron's (actor.megatron.*)"
)
FSDP = (
    "rlport's FSDP (actor.strategy=fsdp) exposes param_dtype, reduce_dtype, param_offload and optimizer_offload only "
    "(actor.fsdp_config.*); verl's other FSDP knobs tune verl's own engine"
)
LORA = (
    "rlport does not implement LoRA on the critic because its LoRA is the actor's "
    "(model.lora_rank: verl's actor_rollout_ref.model.lora_rank); the critic trains every parameter"
)
MEGATRON_LORA = (
    "rlport does not implement verl's Megatron-Bridge LoRA (model.lora.*) because its LoRA is peft's, on the "
    "Hugging Face model: model.lora_rank, model.lora_alpha, model.target_modules (verl's "
    "actor_rollout_ref.model.lora_rank, lora_alpha, target_modules)"
)
MULTI_TURN = (
    "rlport does not implement multi-turn or agent rollouts because a step is one prompt and one "
    "sampled response; not yet planned"
)
REWARD_MODEL = (
    "rlport does not implement model-based rewards (a reward model or a reward-loop server) because "
    "rewards are rules chosen by data_source or reward.path; not yet planned"
)
DISTILLATION = "rlport does not implement distillation from teacher models; not yet planned"
ASYNC = (
    "rlport does not implement verl's asynchronous trainer modes, transfer queue or rollout skipping "
    "because a step is synchronous (rollout, reward, update, weight sync)"
)
HYDRA = "names verl's Python class for Hydra to build; rlport's schema is its own dataclasses"
CHECKPOINT = (
    "rlport saves a whole Hugging Face folder with optimizer.pt and trainer_state.json "
    "(trainer.save_every, trainer.resume_from); verl's checkpoint contents do not apply"
)
DATA_LOADER = (
    "rlport reads the parquet files in the driver and samples batches itself (data.shuffle, "
    "trainer.seed); verl's data-loader settings do not apply"
)
MULTIMODAL = "rlport does not implement multi-modal prompts (images, video, audio); not yet planned"
ENGINE = (
    "rlport passes engine arguments through rollout.options (rollout.options.NAME=VALUE) and does "
    "not implement verl's other rollout-server settings"
)
SPEED = "a speed knob of verl's engine with no counterpart in rlport; the value has no effect"

RULES: tuple[Rule, ...] = (
    # -- data ---------------------------------------------------------------------------------------
    Map("data.train_files", "data.train_files", convert=_files),
    Map("data.val_files", "data.val_files", convert=_files),
    Map("data.prompt_key", "data.prompt_key"),
    Map("data.max_prompt_length", "data.max_prompt_length"),
    Map("data.max_response_length", "rollout.max_new_tokens"),
    Map("data.train_batch_size", "data.train_batch_size"),
    Map("data.shuffle", "data.shuffle"),
    Map("data.seed", "trainer.seed", convert=_unless_null),
    Accept("data.reward_fn_key", "rlport chooses the reward by the data_source column", ("data_source",)),
    Accept(
        "data.filter_overlong_prompts",
        "rlport always drops prompts longer than data.max_prompt_length, and counts them",
        (True, False),
    ),
    Accept(
        "data.truncation",
        "rlport does not truncate prompts because a cut prompt changes the task; it drops those "
        "longer than data.max_prompt_length",
        ("error",),
    ),
    Accept("data.filter_overlong_prompts_workers", DATA_LOADER),
    Accept("data.dataloader_num_workers", DATA_LOADER),
    Accept("data.return_raw_chat", "rlport applies the chat template itself", (True,)),
    Deprecated(
        "data.val_batch_size",
        "unset: the engines take the validation set as one batch",
        "data.val_batch_size",
        note="validation prompts per engine call",
    ),
    Accept("data.gen_batch_size", "rlport generates data.train_batch_size prompts per step", (None,)),
    Map("data.train_max_samples", "data.train_max_samples", convert=_positive_or_zero),
    Map("data.val_max_samples", "data.val_max_samples", convert=_positive_or_zero),
    Map("data.apply_chat_template_kwargs", "data.apply_chat_template_kwargs"),
    Map("data.apply_chat_template_kwargs.*", "data.apply_chat_template_kwargs.*"),
    Refuse("data.validation_shuffle", DATA_LOADER),
    Refuse("data.custom_cls.*", DATA_LOADER),
    Refuse("data.image_key", MULTIMODAL),
    Refuse("data.video_key", MULTIMODAL),
    Refuse("data.audio_key", MULTIMODAL),
    Refuse("data.image_patch_size", MULTIMODAL),
    Refuse("data.return_multi_modal_inputs", MULTIMODAL),
    Refuse("data.mm_processor_kwargs.*", MULTIMODAL),
    Refuse("data.mm_processor_kwargs", MULTIMODAL),
    Refuse("data.tool_config_path", MULTI_TURN),
    Refuse("data.function_tool_path", MULTI_TURN),
    Accept(
        "data.trust_remote_code",
        "the tokenizer loads as the actor does: model.trust_remote_code (verl's actor_rollout_ref.model.trust_remote_code)",
    ),
    Refuse(
        "data.*", "rlport reads verl's parquet layout (prompt, data_source, reward_model, extra_info) only"
    ),
    # -- the model ----------------------------------------------------------------------------------
    Map("actor_rollout_ref.model.path", "model.path"),
    Accept(
        "actor_rollout_ref.model.use_remove_padding",
        "rlport pads each micro-batch to its longest sequence and masks the padding; the value has no effect",
    ),
    Map("actor_rollout_ref.model.enable_gradient_checkpointing", "actor.gradient_checkpointing"),
    Accept("actor_rollout_ref.model.use_fused_kernels", SPEED),
    Accept("actor_rollout_ref.model.use_liger", SPEED, (False,)),
    Map("actor_rollout_ref.model.trust_remote_code", "model.trust_remote_code"),
    Map("actor_rollout_ref.model.lora_rank", "model.lora_rank"),
    Map("actor_rollout_ref.model.lora_alpha", "model.lora_alpha"),
    Map("actor_rollout_ref.model.target_modules", "model.target_modules", convert=_names),
    Map("actor_rollout_ref.model.exclude_modules", "model.exclude_modules", convert=_names),
    Map("actor_rollout_ref.model.lora_adapter_path", "model.lora_adapter_path", convert=_path_or_empty),
    Refuse("actor_rollout_ref.model.lora.*", MEGATRON_LORA),
    Refuse(
        "actor_rollout_ref.model.*",
        "rlport loads model.path with transformers as it is (no tokenizer, config or kernel overrides)",
    ),
    # -- the actor ----------------------------------------------------------------------------------
    Map("actor_rollout_ref.actor.optim.lr", "actor.lr"),
    Map("actor_rollout_ref.actor.optim.weight_decay", "actor.weight_decay"),
    Map("actor_rollout_ref.actor.optim.betas", "actor.betas"),
    Map("actor_rollout_ref.actor.optim.clip_grad", "actor.grad_clip"),
    Map("actor_rollout_ref.actor.grad_clip", "actor.grad_clip"),
    Accept("actor_rollout_ref.actor.optim.optimizer", "rlport trains with AdamW", ("AdamW",)),
    *_schedule("actor_rollout_ref.actor.optim", "actor.lr_schedule"),
    Refuse("actor_rollout_ref.actor.optim.*", "rlport's optimizer is AdamW (actor.lr, actor.lr_schedule.*)"),
    Map("actor_rollout_ref.actor.ppo_epochs", "actor.ppo_epochs"),
    Map("actor_rollout_ref.actor.ppo_mini_batch_size", "actor.ppo_mini_batch_size"),
    Map(
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor.micro_batch_size", convert=_unless_null
    ),
    Deprecated(
        "actor_rollout_ref.actor.ppo_micro_batch_size",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        "actor.micro_batch_size",
        global_count=True,
    ),
    Map("actor_rollout_ref.actor.use_dynamic_bsz", "actor.use_dynamic_bsz"),
    Map("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "actor.ppo_max_token_len_per_gpu"),
    Map("actor_rollout_ref.actor.clip_ratio", "algorithm.clip_ratio_low", "algorithm.clip_ratio_high"),
    Map("actor_rollout_ref.actor.clip_ratio_low", "algorithm.clip_ratio_low"),
    Map("actor_rollout_ref.actor.clip_ratio_high", "algorithm.clip_ratio_high"),
    Map("actor_rollout_ref.actor.use_kl_loss", "algorithm.use_kl_loss"),
    Map("actor_rollout_ref.actor.kl_loss_coef", "algorithm.kl_coef"),
    Map("actor_rollout_ref.actor.kl_loss_type", "algorithm.kl_loss_type"),
    Map("actor_rollout_ref.actor.entropy_coeff", "algorithm.entropy_coef"),
    Map("actor_rollout_ref.actor.loss_agg_mode", "algorithm.loss_agg_mode"),
    Map(
        "actor_rollout_ref.actor.loss_scale_factor", "algorithm.loss_scale_factor", convert=_positive_or_zero
    ),
    Map("actor_rollout_ref.actor.clip_ratio_c", "algorithm.clip_ratio_c"),
    Map("actor_rollout_ref.actor.strategy", "actor.strategy", convert=_strategy, back=lambda v: v or "fsdp"),
    Map("actor_rollout_ref.actor.fsdp_config.param_offload", "actor.fsdp_config.param_offload"),
    *(Map(f"actor_rollout_ref.actor.megatron.{size}", f"actor.megatron.{size}") for size in MEGATRON_SIZES),
    Map("actor_rollout_ref.actor.fsdp_config.optimizer_offload", "actor.fsdp_config.optimizer_offload"),
    Accept("actor_rollout_ref.actor.use_torch_compile", SPEED),
    Accept("actor_rollout_ref.actor.fsdp_config.use_torch_compile", SPEED),
    Accept("actor_rollout_ref.actor.ulysses_sequence_parallel_size", PARALLEL, (1,)),
    Accept("actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size", PARALLEL, (1,)),
    Accept("actor_rollout_ref.actor.rollout_n", "follows rollout.n", ()),
    Accept(
        "actor_rollout_ref.actor.megatron.use_mbridge",
        "rlport converts Hugging Face and Megatron weights through mbridge always",
        (True,),
    ),
    Refuse("actor_rollout_ref.actor.fsdp_config.*", FSDP),
    Refuse("actor_rollout_ref.actor.profiler.*", PROFILER),
    Refuse("actor_rollout_ref.actor.checkpoint.*", CHECKPOINT),
    Map("actor_rollout_ref.actor.policy_loss.loss_mode", "algorithm.policy_loss"),
    *(
        Map(f"actor_rollout_ref.actor.policy_loss.{name}", f"algorithm.policy_loss_options.{name}")
        for name in ("clip_cov_ratio", "clip_cov_lb", "clip_cov_ub", "kl_cov_ratio", "ppo_kl_coef")
    ),
    Map(
        "actor_rollout_ref.actor.policy_loss.dro_beta",
        "algorithm.policy_loss_options.dro_beta",
        convert=_unless_null,
    ),
    Map("actor_rollout_ref.actor.tau_pos", "algorithm.policy_loss_options.tau_pos"),
    Map("actor_rollout_ref.actor.tau_neg", "algorithm.policy_loss_options.tau_neg"),
    Refuse(
        "actor_rollout_ref.actor.policy_loss.*",
        "rlport's policy losses are " + ", ".join(POLICY_LOSSES) + " (algorithm.policy_loss, "
        "their settings in algorithm.policy_loss_options.*)",
    ),
    Refuse(
        "actor_rollout_ref.actor.qat.*",
        "rlport does not implement quantisation-aware training; not yet planned",
    ),
    Refuse(
        "actor_rollout_ref.actor.*",
        "rlport's actor is set by actor.* and algorithm.* (rlport train --show-config)",
    ),
    # -- the reference model --------------------------------------------------------------------------
    Accept(
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
        "rlport computes the reference's logprobs in actor.micro_batch_size chunks; the value has no effect",
    ),
    Accept(
        "actor_rollout_ref.ref.fsdp_config.param_offload",
        "the reference model is parked with the actor (actor.offload); the value has no effect",
    ),
    Deprecated(
        "actor_rollout_ref.ref.log_prob_micro_batch_size",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
        note="rlport computes the reference's logprobs in actor.micro_batch_size chunks; the value has no effect",
    ),
    Accept("actor_rollout_ref.ref.log_prob_use_dynamic_bsz", LOGPROB_CHUNKS),
    Accept("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", LOGPROB_CHUNKS),
    *(
        Accept(f"actor_rollout_ref.ref.megatron.{size}", REFERENCE_WHOLE, (1, None))
        for size in (*MEGATRON_SIZES, "expert_tensor_parallel_size")
    ),
    Accept(
        "actor_rollout_ref.ref.megatron.param_offload",
        "the reference model is parked with the actor (actor.offload); the value has no effect",
    ),
    Refuse("actor_rollout_ref.ref.profiler.*", PROFILER),
    Refuse(
        "actor_rollout_ref.ref.*",
        "rlport's reference model is model.path, held beside the actor when algorithm.use_kl_loss=true",
    ),
    # -- rollout --------------------------------------------------------------------------------------
    Map("actor_rollout_ref.rollout.name", "rollout.engine"),
    Map("actor_rollout_ref.rollout.n", "rollout.n"),
    Map("actor_rollout_ref.rollout.temperature", "rollout.temperature"),
    Map("actor_rollout_ref.rollout.top_p", "rollout.top_p"),
    Map(
        "actor_rollout_ref.rollout.top_k", "rollout.top_k", convert=_positive_or_zero, back=lambda v: v or -1
    ),
    Map("actor_rollout_ref.rollout.response_length", "rollout.max_new_tokens"),
    Map("actor_rollout_ref.rollout.prompt_length", "data.max_prompt_length"),
    Map("actor_rollout_ref.rollout.max_model_len", "rollout.max_model_len", convert=_positive_or_zero),
    Map("actor_rollout_ref.rollout.free_cache_engine", "rollout.sleep"),
    Map("actor_rollout_ref.rollout.gpu_memory_utilization", "rollout.options.gpu_memory_utilization"),
    Map("actor_rollout_ref.rollout.enforce_eager", "rollout.options.enforce_eager"),
    Map("actor_rollout_ref.rollout.engine_kwargs.vllm.*", "rollout.options.*"),
    Map("actor_rollout_ref.rollout.engine_kwargs.sglang.*", "rollout.options.*"),
    Accept("actor_rollout_ref.rollout.tensor_model_parallel_size", PARALLEL, (1,)),
    Accept("actor_rollout_ref.rollout.data_parallel_size", PARALLEL, (1,)),
    Accept("actor_rollout_ref.rollout.pipeline_model_parallel_size", PARALLEL, (1,)),
    Accept("actor_rollout_ref.rollout.expert_parallel_size", PARALLEL, (1,)),
    Accept(
        "actor_rollout_ref.rollout.mode", "rlport's workers call their engine in-process", ("async", "sync")
    ),
    Accept(
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "rlport recomputes logprobs in actor.micro_batch_size chunks; the value has no effect",
    ),
    Deprecated(
        "actor_rollout_ref.rollout.log_prob_micro_batch_size",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        note="rlport recomputes logprobs in actor.micro_batch_size chunks; the value has no effect",
    ),
    Accept("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", LOGPROB_CHUNKS),
    Accept("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", LOGPROB_CHUNKS),
    Accept("actor_rollout_ref.rollout.do_sample", "rlport samples during training", (True,)),
    Accept(
        "actor_rollout_ref.rollout.calculate_log_probs",
        "rlport always returns the engine's logprobs",
        (True,),
    ),
    Accept("actor_rollout_ref.rollout.n_gpus_per_node", "follows trainer.workers", ()),
    Accept(
        "actor_rollout_ref.rollout.load_format",
        "rlport's engine loads model.path, then receives the actor's weights",
    ),
    Accept(
        "actor_rollout_ref.rollout.layered_summon",
        "with LoRA, rlport merges the adapters into each weight as it streams the weights to the engine, "
        "one tensor at a time; the value has no effect",
    ),
    Accept("actor_rollout_ref.rollout.max_num_batched_tokens", SPEED),
    Accept("actor_rollout_ref.rollout.max_num_seqs", SPEED),
    Accept("actor_rollout_ref.rollout.enable_chunked_prefill", SPEED),
    Accept("actor_rollout_ref.rollout.enable_prefix_caching", SPEED),
    Accept("actor_rollout_ref.rollout.disable_log_stats", SPEED),
    Accept("actor_rollout_ref.rollout.dtype", "the engine runs in model.dtype; the value has no effect"),
    Map("actor_rollout_ref.rollout.val_kwargs.do_sample", "rollout.val_kwargs.do_sample"),
    Map("actor_rollout_ref.rollout.val_kwargs.temperature", "rollout.val_kwargs.temperature"),
    Map("actor_rollout_ref.rollout.val_kwargs.top_p", "rollout.val_kwargs.top_p"),
    Map(
        "actor_rollout_ref.rollout.val_kwargs.top_k",
        "rollout.val_kwargs.top_k",
        convert=_positive_or_zero,
        back=lambda v: v or -1,
    ),
    Map("actor_rollout_ref.rollout.val_kwargs.n", "rollout.val_kwargs.n"),
    Refuse("actor_rollout_ref.rollout.multi_turn.*", MULTI_TURN),
    Refuse("actor_rollout_ref.rollout.agent.*", MULTI_TURN),
    Refuse("actor_rollout_ref.rollout.profiler.*", PROFILER),
    Refuse(
        "actor_rollout_ref.rollout.seed",
        "rlport seeds every sample from trainer.seed (rlport.rollout.seeding)",
    ),
    Refuse("actor_rollout_ref.rollout.*", ENGINE),
    Accept(
        "actor_rollout_ref.hybrid_engine",
        "rlport's workers always hold the actor and the engine together",
        (True,),
    ),
    Accept(
        "actor_rollout_ref.nccl_timeout", "the process group uses the device plugin's collectives defaults"
    ),
    # -- the critic, the algorithm --------------------------------------------------------------------
    Map("critic.model.path", "critic.path"),
    Map("critic.model.enable_gradient_checkpointing", "critic.gradient_checkpointing"),
    Map("critic.optim.lr", "critic.lr"),
    Map("critic.optim.weight_decay", "critic.weight_decay"),
    Map("critic.optim.betas", "critic.betas"),
    Map("critic.optim.clip_grad", "critic.grad_clip"),
    Map("critic.grad_clip", "critic.grad_clip"),
    Accept("critic.optim.optimizer", "rlport trains the critic with AdamW", ("AdamW",)),
    *_schedule("critic.optim", "critic.lr_schedule"),
    Refuse("critic.optim.*", "rlport's critic optimizer is AdamW (critic.lr, critic.lr_schedule.*)"),
    Map("critic.ppo_epochs", "critic.ppo_epochs"),
    Map("critic.ppo_mini_batch_size", "critic.ppo_mini_batch_size"),
    Map("critic.ppo_micro_batch_size_per_gpu", "critic.micro_batch_size", convert=_unless_null),
    Deprecated(
        "critic.ppo_micro_batch_size",
        "critic.ppo_micro_batch_size_per_gpu",
        "critic.micro_batch_size",
        global_count=True,
    ),
    Accept(
        "critic.forward_micro_batch_size_per_gpu",
        "rlport computes values in critic.micro_batch_size chunks; the value has no effect",
    ),
    Deprecated(
        "critic.forward_micro_batch_size",
        "critic.forward_micro_batch_size_per_gpu",
        note="rlport computes values in critic.micro_batch_size chunks; the value has no effect",
    ),
    Map("critic.cliprange_value", "critic.cliprange_value"),
    Map("critic.loss_agg_mode", "critic.loss_agg_mode"),
    Accept(
        "critic.enable",
        "rlport trains a critic exactly when algorithm.adv_estimator=gae",
        (None,),
    ),
    Accept("critic.strategy", CRITIC_SHARED, ("fsdp", "fsdp2")),
    Accept("critic.rollout_n", "follows rollout.n"),
    Accept("critic.shuffle", "rlport shuffles each mini-batch split (seeded by trainer.seed)"),
    Accept("critic.data_loader_seed", "rlport seeds the mini-batch split from trainer.seed"),
    Accept(
        "critic.loss_scale_factor",
        "rlport's critic divides seq-mean-token-sum-norm by rollout.max_new_tokens",
        (None,),
    ),
    Map("critic.use_dynamic_bsz", "critic.use_dynamic_bsz"),
    Map("critic.ppo_max_token_len_per_gpu", "critic.ppo_max_token_len_per_gpu"),
    Accept(
        "critic.forward_max_token_len_per_gpu",
        "rlport computes values in the critic's micro-batches (critic.ppo_max_token_len_per_gpu with "
        "use_dynamic_bsz); the value has no effect",
    ),
    Accept("critic.ulysses_sequence_parallel_size", PARALLEL, (1,)),
    Accept("critic.model.use_remove_padding", "rlport pads each micro-batch; the value has no effect"),
    Accept(
        "critic.model.trust_remote_code",
        "the critic loads as the actor does: model.trust_remote_code (verl's actor_rollout_ref.model.trust_remote_code)",
    ),
    Accept("critic.model.use_fused_kernels", SPEED),
    Accept("critic.model.use_liger", SPEED, (False,)),
    *(
        Refuse(f"critic.model.{k}", LORA)
        for k in ("lora_rank", "lora_alpha", "target_modules", "exclude_modules", "lora_adapter_path")
    ),
    Refuse("critic.model.lora.*", MEGATRON_LORA),
    Refuse(
        "critic.model.*",
        "rlport loads critic.path with transformers as it is (AutoModelForTokenClassification, one label)",
    ),
    Map("critic.fsdp.param_offload", "critic.fsdp_config.param_offload"),
    Map("critic.fsdp.optimizer_offload", "critic.fsdp_config.optimizer_offload"),
    *(  # verl before 0.9 named the critic's FSDP settings critic.model.fsdp_config.*
        Map(
            f"critic.model.fsdp_config.{k}",
            f"critic.fsdp_config.{k}",
            note=f"verl 0.9's name is critic.fsdp.{k}",
        )
        for k in ("param_offload", "optimizer_offload")
    ),
    Refuse("critic.fsdp.*", FSDP),
    Refuse("critic.checkpoint.*", CHECKPOINT),
    Refuse("critic.profiler.*", PROFILER),
    Refuse("critic.*", "rlport's critic is set by critic.* (rlport train --show-config)"),
    Map("algorithm.adv_estimator", "algorithm.adv_estimator"),
    Map("algorithm.norm_adv_by_std_in_grpo", "algorithm.norm_adv_by_std"),
    Map("algorithm.gamma", "algorithm.gamma"),
    Map("algorithm.lam", "algorithm.lam"),
    Map("algorithm.use_kl_in_reward", "algorithm.use_kl_in_reward"),
    Map("algorithm.kl_penalty", "algorithm.kl_penalty"),
    Map("algorithm.kl_ctrl.type", "algorithm.kl_ctrl.type"),
    Map("algorithm.kl_ctrl.kl_coef", "algorithm.kl_ctrl.kl_coef"),
    Map("algorithm.kl_ctrl.target_kl", "algorithm.kl_ctrl.target_kl"),
    Map("algorithm.kl_ctrl.horizon", "algorithm.kl_ctrl.horizon"),
    *(
        Map(f"algorithm.rollout_correction.{name}", f"algorithm.rollout_correction.{name}", convert=convert)
        for name, convert in (
            ("rollout_is", None),
            ("rollout_is_threshold", _text),
            ("rollout_is_batch_normalize", None),
            ("rollout_rs", None),
            ("rollout_rs_threshold", _text),
            ("bypass_mode", None),
            ("loss_type", None),
        )
    ),
    Refuse(
        "algorithm.*",
        "rlport does not implement verl's other algorithm variants (filter groups, PF-PPO); it runs "
        "the estimators algorithm.adv_estimator lists (rlport train --show-config); not yet planned",
    ),
    # -- rewards --------------------------------------------------------------------------------------
    Map("custom_reward_function.path", "reward.path", convert=_unless_null),
    Map("custom_reward_function.name", "reward.name", convert=_unless_null),
    Map("reward.custom_reward_function.path", "reward.path", convert=_unless_null),
    Map("reward.custom_reward_function.name", "reward.name", convert=_unless_null),
    Accept(
        "reward.reward_manager.name",
        "rlport scores each response with its data source's rule (verl's naive manager)",
        ("naive",),
    ),
    Accept("reward.num_workers", "rlport scores in the driver; the value has no effect"),
    Refuse("reward.sandbox_fusion.*", "rlport does not implement code-execution rewards (sandbox fusion)"),
    Refuse("sandbox_fusion.*", "rlport does not implement code-execution rewards (sandbox fusion)"),
    Refuse("reward_model.*", REWARD_MODEL),
    Refuse("reward.*", REWARD_MODEL),
    # -- the trainer ----------------------------------------------------------------------------------
    Map("trainer.total_epochs", "trainer.total_epochs"),
    Map("trainer.total_training_steps", "trainer.total_training_steps", convert=_positive_or_zero),
    Map("trainer.project_name", "trainer.project_name"),
    Map("trainer.experiment_name", "trainer.experiment_name"),
    Map("trainer.logger", "trainer.logger", convert=_loggers),
    Map("trainer.n_gpus_per_node", "trainer.n_gpus_per_node"),
    Map("trainer.nnodes", "trainer.nnodes"),
    Map(
        "trainer.save_freq",
        "trainer.save_every",
        convert=_positive_or_zero,
        note="rlport always saves at the end; verl's -1 is rlport's 0",
    ),
    Map("trainer.test_freq", "trainer.test_freq", convert=_positive_or_zero, back=lambda v: v or -1),
    Map("trainer.val_before_train", "trainer.val_before_train"),
    Map("trainer.default_local_dir", "trainer.output_dir"),
    Map("trainer.resume_from_path", "trainer.resume_from", convert=_unless_null),
    Map(
        "trainer.resume_mode",
        "trainer.resume_from",
        convert=_resume_mode,
        back=lambda v: "auto" if v == "latest" else ("resume_path" if v else "disable"),
        note="auto: trainer.resume_from=latest (the newest complete checkpoint); resume_path: "
        "trainer.resume_from_path says which",
    ),
    Map(
        "trainer.critic_warmup",
        "trainer.critic_warmup_steps",
        convert=_warmup,
        back=lambda v: v + 1 if v else 0,
        note="verl updates only the critic while the step (from 1) is below N: rlport's first N - 1 steps",
    ),
    Accept("trainer.balance_batch", "rlport splits each step's prompts evenly over the workers"),
    Accept("trainer.device", "the device plugin chooses the device (RLPORT_DEVICE=name picks one)"),
    Map(
        "trainer.val_only",
        "trainer.val_only",
        note="rlport validates once and stops whether or not trainer.val_before_train is set",
    ),
    Map("trainer.log_val_generations", "trainer.log_val_generations"),
    Accept("trainer.ray_wait_register_center_timeout", "rlport's workers register with Ray directly"),
    Accept("trainer.use_v1", "rlport has one trainer"),
    Refuse("trainer.v1.*", ASYNC),
    *(
        Map(
            f"trainer.max_{model}_ckpt_to_keep",
            "trainer.max_checkpoints_to_keep",
            convert=_positive_or_zero,
            note="one rlport checkpoint holds the actor and the critic: both keys set how many are kept",
        )
        for model in ("actor", "critic")
    ),
    Map("trainer.rollout_data_dir", "trainer.rollout_data_dir", convert=_unless_null),
    Map("trainer.validation_data_dir", "trainer.validation_data_dir", convert=_unless_null),
    Refuse(
        "trainer.*",
        "a verl trainer feature rlport does not implement (hdfs copies, checkpoint callbacks, deleting a checkpoint after loading it)",
    ),
    Map("ray_kwargs.ray_init.num_cpus", "trainer.ray_num_cpus", convert=_positive_or_zero),
    Refuse("ray_kwargs.*", "rlport starts Ray itself (trainer.ray_address, trainer.ray_num_cpus)"),
    # -- the rest -------------------------------------------------------------------------------------
    Refuse("global_profiler.*", PROFILER),
    Refuse("distillation.*", DISTILLATION),
    Refuse("transfer_queue.*", ASYNC),
    Refuse("skip.*", ASYNC),
    Refuse(
        "hydra.*", "rlport reads one composed file (--config) and the command line, not Hydra's run settings"
    ),
    Refuse(
        "defaults",
        "rlport reads one composed file: write it with `python -m verl.trainer.main_ppo --cfg job > run.yaml`",
    ),
)


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


def _same(a: Any, b: Any) -> bool:
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
    return _same(value, defaults(resolved=True)[key]) or _same(
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
        if not rule.values or any(_same(value, v) for v in rule.values):
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
            if not _same(converted, ours):
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
        "# Regenerate: python -m rlport.train.config.verl_keys PATH/verl/trainer/config/_generated_ppo_trainer.yaml\n"
        + body
    )
    return len(flatten(tree))


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    import sys

    print(f"{write_defaults(sys.argv[1])} keys written to {DEFAULTS_FILE}")
