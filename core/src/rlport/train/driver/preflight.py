"""Checks against the machine, run before any work starts: files, model folder, engine, Ray.

Each failure is a :class:`~rlport.errors.ConfigError` (or the runtime's ``EngineError``) naming the
bad value, what was expected and the fix.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport.train.config.derive import strategy_of
from rlport.train.config.schema import TrainConfig
from rlport.train.data.prompts import Example

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS)


def check_model_folder(path: str, key: str = "model.path") -> Path:
    if not path:
        raise ConfigError(
            f"{key} is empty; expected a local Hugging Face model folder",
            f"rlport train {key}=/path/to/model (or rlport train --demo to build a tiny one)",
        )
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            f"{key}='{path}' is not a folder",
            f"rlport train {key}=/path/to/model (a folder written by save_pretrained)",
        )
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{key}='{path}' has no config.json, so it is not a Hugging Face model folder",
            f"save the model with model.save_pretrained('{path}') or point {key} at such a folder",
        )
    if not has_weights(folder):
        raise ConfigError(
            f"{key}='{path}' has config.json but no weights (*.safetensors or *.bin)",
            f"save the weights with model.save_pretrained('{path}'), or point {key} at a complete folder",
        )
    return folder


def check_remote_code(folder: Path, key: str, trust: bool) -> None:
    """A folder whose ``config.json`` names its own code (``auto_map``) for a model type
    transformers does not know loads only with ``model.trust_remote_code=true``: say so before
    any worker starts, instead of transformers' error from inside one."""
    config = json.loads((folder / "config.json").read_text())
    if trust or not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"{key}='{folder}' is a '{model_type}' model whose code is in the folder itself "
            f"(config.json auto_map: {', '.join(sorted(config['auto_map']))}), which transformers does not "
            "run unless asked",
            "rlport train model.trust_remote_code=true (it runs that Python code: only for a folder you trust)",
        )


def check_data_files(cfg: TrainConfig) -> None:
    if not cfg.data.train_files:
        raise ConfigError(
            "data.train_files is empty; expected parquet files in verl's layout",
            "rlport train data.train_files=[train.parquet] (or rlport train --demo)",
        )
    for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
        for f in files:
            if not Path(f).expanduser().is_file():
                raise ConfigError(
                    f"data file '{f}' does not exist ({key})",
                    f"check the path (looked at {Path(f).expanduser().resolve()}), e.g. "
                    f"rlport train {key}=[$HOME/data/gsm8k/train.parquet]",
                )


@dataclass(frozen=True)
class Inputs:
    """The user's data, read once per start by :func:`check_inputs`: every row of
    ``data.train_files`` and of ``data.val_files`` (empty without them), in file order."""

    train: list[Example]
    val: list[Example]


def check_inputs(cfg: TrainConfig) -> Inputs:
    """What needs neither torch nor the plugins: the files, the model folder, the data's columns and
    rewards, the loggers' libraries. Run before the startup summary prints, so a typo in a path is
    the first thing a user sees. Returns the data it read, for the trainer to use."""
    from rlport.train.data.prompts import read_parquet
    from rlport.train.data.rewards import RewardManager
    from rlport.train.tracking.loggers import check_installed

    check_data_files(cfg)
    check_remote_code(check_model_folder(cfg.model.path), "model.path", cfg.model.trust_remote_code)
    check_critic_folder(cfg)
    check_installed(cfg.trainer.logger)
    rewards = RewardManager.from_config(cfg.reward)
    read: dict[str, list[Example]] = {}
    for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
        read[key] = read_parquet(files, cfg.data.prompt_key, key=key) if files else []
        rewards.check_sources({e.data_source for e in read[key]})
    return Inputs(read["data.train_files"], read["data.val_files"])


def check_engine(cfg: TrainConfig, rt: Any) -> None:
    """The engine is offered by an active plugin and its packages are installed."""
    rt.engine_offer(cfg.rollout.engine)


def check_attention(cfg: TrainConfig) -> None:
    if (
        cfg.model.attn_implementation == "rlport"
        and importlib.util.find_spec("rlport.attention.transformers_integration") is None
    ):
        raise ConfigError(
            "model.attn_implementation='rlport' but rlport.attention.transformers_integration is missing",
            "reinstall rlport (pip install -e core) or set model.attn_implementation=sdpa",
        )


def check_ray(cfg: TrainConfig) -> None:
    if cfg.trainer.workers > 1:
        from rlport.extras import require

        require("train", ("ray",), purpose=f"trainer.workers={cfg.trainer.workers}")


def check_output_dir(cfg: TrainConfig) -> None:
    out = Path(cfg.trainer.output_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"trainer.output_dir='{out}' cannot be created: {exc}",
            "rlport train trainer.output_dir=/a/writable/folder",
        ) from exc


def check_device_runs(strategy: str, rt: Any) -> None:
    """Refuse an ``actor.strategy`` that is unknown, not built, or that the device plugin says its
    device cannot run (``rlport_unsupported_strategies``), before any model is loaded."""
    from rlport.train.strategies import BUILT, KNOWN

    if strategy not in KNOWN:
        raise ConfigError(
            f"config key 'actor.strategy' is {strategy!r}; expected one of {', '.join(KNOWN)}",
            "rlport train actor.strategy=fsdp",
        )
    refused, plugin = rt.unsupported_strategies()
    if strategy in refused:
        runnable = [s for s in BUILT if s not in refused]
        raise ConfigError(
            f"actor.strategy={strategy} cannot run on this device ({rt.device.device_type}, plugin "
            f"{rt.device_plugin!r}): {refused[strategy]} (said by plugin {plugin!r})",
            f"rlport train actor.strategy={runnable[0] if runnable else 'fsdp'}, or run on a device "
            f"whose plugin supports {strategy}",
        )
    if strategy not in BUILT:
        raise ConfigError(
            f"actor.strategy={strategy} is not available in this version of rlport",
            f"rlport train actor.strategy=fsdp (built: {', '.join(BUILT)})",
        )


def check_strategy(cfg: TrainConfig, rt: Any) -> None:
    """``actor.strategy`` is built and the device can run it (the training hooks say)."""
    name = strategy_of(cfg)
    check_device_runs(name, rt)
    if name in ("ddp", "fsdp") and cfg.trainer.workers < 2:
        raise ConfigError(
            f"actor.strategy={name} splits the work over data-parallel workers, but trainer.workers=1",
            f"rlport train trainer.workers=2 actor.strategy={name} (or actor.strategy=replicated)",
        )
    if name == "fsdp":
        sections = ["actor", "critic"] if cfg.algorithm.adv_estimator == "gae" else ["actor"]
        for section in sections:
            check_offload(section, getattr(cfg, section).fsdp_config, rt.device.device_type)
    if name == "fsdp" and cfg.actor.offload:
        raise ConfigError(
            "actor.offload=true parks whole parameters, which actor.strategy=fsdp shards",
            "rlport train actor.fsdp_config.param_offload=true (FSDP's own CPU offload) instead",
        )
    if name == "megatron":
        check_megatron(cfg)


def check_offload(section: str, fsdp: Any, device_type: str) -> None:
    """``SECTION.fsdp_config``'s offload asks for what FSDP2 does: parameters, gradients and the
    optimizer state move to the host together (``CPUOffloadPolicy``), and only off the host."""
    key = f"{section}.fsdp_config"
    if fsdp.param_offload and device_type == "cpu":
        raise ConfigError(
            f"{key}.param_offload=true moves parameters to the host, and the training device already is the host (cpu)",
            f"rlport train {key}.param_offload=false",
        )
    if fsdp.optimizer_offload and not fsdp.param_offload and device_type != "cpu":
        raise ConfigError(
            f"{key}.optimizer_offload=true without {key}.param_offload: FSDP2 keeps the optimizer state "
            "beside the parameters, so it moves to the host only with them",
            f"rlport train {key}.param_offload=true (or {key}.optimizer_offload=false)",
        )


def check_megatron(cfg: TrainConfig) -> None:
    """megatron-core and mbridge are installed (found, not imported: a device plugin may have to
    import its adaptor before Megatron), and ``actor.megatron``'s sizes fit the workers and what the
    actor's loop trains."""
    from rlport.extras import require

    require("megatron", purpose="actor.strategy=megatron")
    if cfg.actor.offload:
        raise ConfigError(
            "actor.offload=true parks the Hugging Face module's parameters, and actor.strategy=megatron "
            "trains megatron-core's model instead",
            "rlport train actor.strategy=megatron actor.offload=false",
        )
    m, workers = cfg.actor.megatron, cfg.trainer.workers
    model_parallel = m.tensor_model_parallel_size * m.pipeline_model_parallel_size * m.context_parallel_size
    if workers % model_parallel:
        raise ConfigError(
            f"trainer.workers={workers} is not a multiple of tensor x pipeline x context parallel sizes "
            f"({m.tensor_model_parallel_size} x {m.pipeline_model_parallel_size} x {m.context_parallel_size})",
            f"rlport train trainer.workers={model_parallel} actor.strategy=megatron",
        )
    split = {
        k: getattr(m, k)
        for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size")
        if getattr(m, k) > 1
    }
    if split:
        named = ", ".join(f"actor.megatron.{k}={v}" for k, v in split.items())
        raise ConfigError(
            f"{named}: the model builds and converts split so, but training it needs Megatron's "
            "pipeline schedule and one batch per model-parallel group, which the actor's loop does not "
            "drive yet",
            "rlport train actor.strategy=megatron " + " ".join(f"actor.megatron.{k}=1" for k in split),
        )


def check_lora(cfg: TrainConfig) -> None:
    """``model.lora_rank > 0``: peft is installed, the strategy can hold adapters, and a
    ``model.lora_adapter_path`` is an adapter folder."""
    m = cfg.model
    if not m.lora_rank:
        if m.lora_adapter_path:
            raise ConfigError(
                f"model.lora_adapter_path='{m.lora_adapter_path}' is set, but model.lora_rank=0 trains without adapters",
                "rlport train model.lora_rank=R (the adapter's rank; its own config decides) or model.lora_adapter_path=''",
            )
        return
    from rlport.extras import require

    require("lora", purpose=f"model.lora_rank={m.lora_rank}")
    if strategy_of(cfg) == "megatron":
        raise ConfigError(
            "model.lora_rank > 0 with actor.strategy=megatron: rlport's LoRA is peft's, on a Hugging Face model",
            "rlport train actor.strategy=fsdp (or ddp, replicated) model.lora_rank=...",
        )
    if m.lora_adapter_path and not (Path(m.lora_adapter_path).expanduser() / "adapter_config.json").is_file():
        raise ConfigError(
            f"model.lora_adapter_path='{m.lora_adapter_path}' holds no adapter_config.json",
            "give a folder that PeftModel.save_pretrained wrote (a checkpoint's actor/lora_adapter), or model.lora_adapter_path=''",
        )
    if not m.lora_adapter_path:
        check_lora_targets(m)


def check_lora_targets(m: Any) -> None:
    """``model.target_modules`` and ``exclude_modules`` name modules the model has: the adapters are
    added to the model's structure on the meta device (no weights read), as the workers will add
    them, so a wrong name is refused before any worker starts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlport.train.models.lora import add_adapters

    config = AutoConfig.from_pretrained(m.path, trust_remote_code=m.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=m.trust_remote_code)
    names = [n for n, _ in skeleton.named_modules()]
    for key, given in (("target_modules", m.target_modules), ("exclude_modules", m.exclude_modules)):
        # peft matches a name to a module whose name is it or ends with "." + it; a list that
        # matches at all is taken whole, so a misspelt entry beside a right one would pass silently
        missing = [
            t for t in given if t != "all-linear" and not any(n == t or n.endswith("." + t) for n in names)
        ]
        if missing:
            linear = sorted(
                {
                    n.rpartition(".")[2]
                    for n, mod in skeleton.named_modules()
                    if isinstance(mod, torch.nn.Linear)
                }
            )
            raise ConfigError(
                f"model.{key} names {missing}, which model.path '{m.path}' ({config.model_type}) has no module called",
                f"model.{key}=[all-linear], or names of its linear modules: {', '.join(linear)}",
            )
    add_adapters(skeleton, m)  # what else peft refuses, named the same way


def check_critic_folder(cfg: TrainConfig) -> None:
    """With PPO (``algorithm.adv_estimator=gae``), ``critic.path`` (default ``model.path``) is a
    model folder too."""
    if cfg.algorithm.adv_estimator == "gae" and cfg.critic.path and cfg.critic.path != cfg.model.path:
        folder = check_model_folder(cfg.critic.path, "critic.path")
        check_remote_code(folder, "critic.path", cfg.model.trust_remote_code)


def validate(cfg: TrainConfig, rt: Any) -> None:
    """Everything that needs the runtime (its plugins and device) but no model: run after
    :func:`check_inputs`."""
    if cfg.trainer.resume_from:
        from rlport.train.checkpoint import resolve_resume

        folder = resolve_resume(cfg.trainer.resume_from, Path(cfg.trainer.output_dir).expanduser())
        if folder is not None:
            check_model_folder(str(folder), "trainer.resume_from")
    check_engine(cfg, rt)
    check_strategy(cfg, rt)
    check_attention(cfg)
    check_lora(cfg)
    check_ray(cfg)
    check_output_dir(cfg)
