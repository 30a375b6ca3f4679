"""The verl key table: one :class:`~.rules.Rule` for every key of verl's composed
``ppo_trainer.yaml`` (:data:`VERL_VERSION`'s; its defaults ship as ``defaults.yaml``), saying what
each becomes in rlport. An exact key is looked up before the longest ``.*`` prefix covering it
(:func:`~.translate.rule_for`), so a prefix row states what the keys below it that no other row
names do.
"""

from __future__ import annotations

from rlport.train.config.choices import POLICY_LOSSES
from rlport.train.config.verl.rules import (
    ASYNC,
    CHECKPOINT,
    CRITIC_SHARED,
    DATA_LOADER,
    DISTILLATION,
    ENGINE,
    FSDP,
    LOGPROB_CHUNKS,
    LORA,
    MEGATRON_LORA,
    MULTI_TURN,
    MULTIMODAL,
    PARALLEL,
    PROFILER,
    REFERENCE_WHOLE,
    REWARD_MODEL,
    SPEED,
    Accept,
    Deprecated,
    Map,
    Refuse,
    Rule,
    actor_strategy,
    as_list,
    as_text,
    critic_warmup,
    empty_if_null,
    module_names,
    positive_or_zero,
    resume_mode,
    unless_null,
)

VERL_VERSION = "0.9.1"


def _schedule(verl: str, rlport: str) -> list[Rule]:
    """verl's learning-rate schedule keys under ``verl`` (``...optim``) onto ``rlport``
    (``actor.lr_schedule`` or ``critic.lr_schedule``): the same schedules as verl's
    ``get_constant_schedule_with_warmup`` / ``get_cosine_schedule_with_warmup``."""
    return [
        Map(f"{verl}.lr_scheduler_type", f"{rlport}.type"),
        Map(
            f"{verl}.warmup_style",
            f"{rlport}.type",
            convert=unless_null,
            note="deprecated in verl for lr_scheduler_type",
        ),
        Map(
            f"{verl}.lr_warmup_steps",
            f"{rlport}.warmup_steps",
            convert=positive_or_zero,
            note="verl's -1 (take lr_warmup_steps_ratio) is rlport's 0",
        ),
        Map(f"{verl}.lr_warmup_steps_ratio", f"{rlport}.warmup_steps_ratio"),
        Map(f"{verl}.min_lr_ratio", f"{rlport}.min_lr_ratio", convert=unless_null),
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

RULES: tuple[Rule, ...] = (
    # -- data ---------------------------------------------------------------------------------------
    Map("data.train_files", "data.train_files", convert=as_list),
    Map("data.val_files", "data.val_files", convert=as_list),
    Map("data.prompt_key", "data.prompt_key"),
    Map("data.max_prompt_length", "data.max_prompt_length"),
    Map("data.max_response_length", "rollout.max_new_tokens"),
    Map("data.train_batch_size", "data.train_batch_size"),
    Map("data.shuffle", "data.shuffle"),
    Map("data.seed", "trainer.seed", convert=unless_null),
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
    Map("data.train_max_samples", "data.train_max_samples", convert=positive_or_zero),
    Map("data.val_max_samples", "data.val_max_samples", convert=positive_or_zero),
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
    Map("actor_rollout_ref.model.target_modules", "model.target_modules", convert=module_names),
    Map("actor_rollout_ref.model.exclude_modules", "model.exclude_modules", convert=module_names),
    Map("actor_rollout_ref.model.lora_adapter_path", "model.lora_adapter_path", convert=empty_if_null),
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
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor.micro_batch_size", convert=unless_null
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
    Map("actor_rollout_ref.actor.loss_scale_factor", "algorithm.loss_scale_factor", convert=positive_or_zero),
    Map("actor_rollout_ref.actor.clip_ratio_c", "algorithm.clip_ratio_c"),
    Map(
        "actor_rollout_ref.actor.strategy",
        "actor.strategy",
        convert=actor_strategy,
        back=lambda v: v or "fsdp",
    ),
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
        convert=unless_null,
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
    Map("actor_rollout_ref.rollout.top_k", "rollout.top_k", convert=positive_or_zero, back=lambda v: v or -1),
    Map("actor_rollout_ref.rollout.response_length", "rollout.max_new_tokens"),
    Map("actor_rollout_ref.rollout.prompt_length", "data.max_prompt_length"),
    Map("actor_rollout_ref.rollout.max_model_len", "rollout.max_model_len", convert=positive_or_zero),
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
        convert=positive_or_zero,
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
    Map("critic.ppo_micro_batch_size_per_gpu", "critic.micro_batch_size", convert=unless_null),
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
            ("rollout_is_threshold", as_text),
            ("rollout_is_batch_normalize", None),
            ("rollout_rs", None),
            ("rollout_rs_threshold", as_text),
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
    Map("custom_reward_function.path", "reward.path", convert=unless_null),
    Map("custom_reward_function.name", "reward.name", convert=unless_null),
    Map("reward.custom_reward_function.path", "reward.path", convert=unless_null),
    Map("reward.custom_reward_function.name", "reward.name", convert=unless_null),
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
    Map("trainer.total_training_steps", "trainer.total_training_steps", convert=positive_or_zero),
    Map("trainer.project_name", "trainer.project_name"),
    Map("trainer.experiment_name", "trainer.experiment_name"),
    Map("trainer.logger", "trainer.logger", convert=as_list),
    Map("trainer.n_gpus_per_node", "trainer.n_gpus_per_node"),
    Map("trainer.nnodes", "trainer.nnodes"),
    Map(
        "trainer.save_freq",
        "trainer.save_every",
        convert=positive_or_zero,
        note="rlport always saves at the end; verl's -1 is rlport's 0",
    ),
    Map("trainer.test_freq", "trainer.test_freq", convert=positive_or_zero, back=lambda v: v or -1),
    Map("trainer.val_before_train", "trainer.val_before_train"),
    Map("trainer.default_local_dir", "trainer.output_dir"),
    Map("trainer.resume_from_path", "trainer.resume_from", convert=unless_null),
    Map(
        "trainer.resume_mode",
        "trainer.resume_from",
        convert=resume_mode,
        back=lambda v: "auto" if v == "latest" else ("resume_path" if v else "disable"),
        note="auto: trainer.resume_from=latest (the newest complete checkpoint); resume_path: "
        "trainer.resume_from_path says which",
    ),
    Map(
        "trainer.critic_warmup",
        "trainer.critic_warmup_steps",
        convert=critic_warmup,
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
            convert=positive_or_zero,
            note="one rlport checkpoint holds the actor and the critic: both keys set how many are kept",
        )
        for model in ("actor", "critic")
    ),
    Map("trainer.rollout_data_dir", "trainer.rollout_data_dir", convert=unless_null),
    Map("trainer.validation_data_dir", "trainer.validation_data_dir", convert=unless_null),
    Refuse(
        "trainer.*",
        "a verl trainer feature rlport does not implement (hdfs copies, checkpoint callbacks, deleting a checkpoint after loading it)",
    ),
    Map("ray_kwargs.ray_init.num_cpus", "trainer.ray_num_cpus", convert=positive_or_zero),
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
