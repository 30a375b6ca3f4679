"""The `rlport train` configuration: a documented default, dotted overrides, and validation.

The default lives in the dataclasses below (one per section: ``data``, ``model``, ``rollout``,
``actor``, ``algorithm``, ``reward``, ``trainer``); every field's comment is its documentation and
:func:`default_yaml` renders them. Overrides are written as in verl's ``main_ppo``::

    rlport train data.train_files=[a.parquet,b.parquet] rollout.engine=vllm trainer.steps=50

An unknown key, a value of the wrong type or a value out of range is a :class:`ConfigError`
naming the key, the value, what was expected and the override that fixes it, raised before any
work starts. Checks that look at the machine (files, model folder, installed engine) live in
:mod:`rlport.train.validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from rlport.errors import ConfigError

_NULLS = {"null", "none", "~"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=list)  # parquet files in verl's layout
    prompt_key: str = "prompt"  # column holding the chat messages [{role, content}, ...]
    train_batch_size: int = 8  # prompts per step (each sampled rollout.n times)
    max_prompt_length: int = 256  # prompts longer than this (in tokens) are dropped, with a count
    shuffle: bool = True  # reshuffle the prompts every epoch (seeded by trainer.seed)


@dataclass
class ModelConfig:
    path: str = ""  # a local Hugging Face causal-LM folder (config.json + weights + tokenizer)
    dtype: str = "float32"  # float32 | bfloat16 | float16: the actor's and the engine's dtype
    attn_implementation: str = "rlport"  # "rlport" routes attention through the device plugin's backend


@dataclass
class RolloutConfig:
    engine: str = "hf"  # a rollout engine offered by a plugin (`rlport plugins` lists them): hf | vllm
    n: int = 8  # samples per prompt: the GRPO group size (at least 2)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    max_new_tokens: int = 32  # response length limit
    max_model_len: int = 512  # prompt + response limit given to the engine
    sleep: bool = True  # release the engine's weights and KV cache while the actor trains
    options: dict[str, Any] = field(default_factory=dict)  # engine-specific arguments (rollout.options.x=y)


@dataclass
class FsdpConfig:
    param_dtype: str = ""  # compute dtype of the gathered parameters; "": the stored dtype (model.dtype)
    reduce_dtype: str = "float32"  # dtype of the gradient reduce-scatter; "": the parameters' dtype
    param_offload: bool = False  # parameters, gradients and optimizer state on the host (CPUOffloadPolicy)


@dataclass
class MegatronConfig:
    tensor_model_parallel_size: int = 1  # ranks one layer's matrices are split over
    pipeline_model_parallel_size: int = 1  # stages the layers are split into
    virtual_pipeline_model_parallel_size: int | None = None  # model chunks per stage (interleaved)
    context_parallel_size: int = 1  # ranks one sequence is split over
    expert_model_parallel_size: int = 1  # ranks the experts of an MoE layer are split over


@dataclass
class ActorConfig:
    strategy: str = ""  # replicated | ddp | fsdp | megatron; "": fsdp with trainer.workers > 1
    fsdp_config: FsdpConfig = field(default_factory=FsdpConfig)  # actor.strategy=fsdp only
    megatron: MegatronConfig = field(default_factory=MegatronConfig)  # actor.strategy=megatron only
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    ppo_epochs: int = 1  # passes over each step's rollouts
    mini_batches: int = 1  # optimizer updates per epoch (the step's rollouts split this many ways)
    micro_batch_size: int = 16  # sequences per forward/backward (gradients accumulate)
    offload: bool | None = None  # park actor/reference weights during rollout; null: only off-host


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"  # only grpo is implemented
    norm_adv_by_std: bool = True  # GRPO divides by the group's std; false gives Dr. GRPO-style advantages
    adv_epsilon: float = 1e-6  # added to the group std
    clip_ratio_low: float = 0.2  # ratio is clipped to [1 - low, 1 + high]
    clip_ratio_high: float = 0.2
    use_kl_loss: bool = False  # add kl_coef * KL(actor || reference) (k3 estimator) to the loss
    kl_coef: float = 0.001
    entropy_coef: float = 0.0  # subtract entropy_coef * entropy from the loss


@dataclass
class RewardConfig:
    custom: str = ""  # module:function (data_source, solution_str, ground_truth, extra_info) -> float


@dataclass
class TrainerConfig:
    steps: int = 50  # optimizer steps (each: rollout, reward, update, weight sync)
    workers: int = 1  # data-parallel workers; more than 1 runs Ray actors
    nnodes: int = 1  # nodes the workers are spread over (verl's key); the workers split evenly over them
    n_gpus_per_node: int = (
        0  # devices (one worker each) per node, verl's key; 0: trainer.workers / trainer.nnodes
    )
    seed: int = 0
    output_dir: str = "outputs/rlport"  # metrics.jsonl, reward_curve.png and checkpoints/ go here
    save_every: int = 0  # save a checkpoint every N steps; 0: only at the end
    resume_from: str = (
        ""  # a checkpoint folder (output_dir/checkpoints/step_N), or latest: the newest complete one
    )
    ray_address: str = ""  # "": start Ray on this machine; "auto" or host:port: join a running cluster
    ray_num_cpus: int = 0  # CPUs for a local Ray; 0: as many as the machine has
    cpus_per_worker: float = 1.0  # Ray CPUs each worker requests
    startup_timeout_s: float = 120.0  # seconds to wait for Ray's placement and the workers' rendezvous
    progress: bool = True  # a live progress bar (off in logs and tests)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -------------------------------------------------------------------------------------------------
# Key lookup and value coercion
# -------------------------------------------------------------------------------------------------


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = TrainConfig, prefix: str = "") -> dict[str, Any]:
    """Every settable dotted key of the configuration and its type."""
    out: dict[str, Any] = {}
    for name, tp in _field_types(cls).items():
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            out.update(all_keys(tp, key + "."))
        else:
            out[key] = tp
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or null"
    if origin is list:
        return f"a list of {_type_name(args[0])} ([a,b,...])"
    if origin is dict:
        return "a mapping (set entries as key.sub=value)"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(
        tp, str(tp)
    )


def _example(key: str, tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is list:
        return f"{key}=[a,b]" if typing.get_args(tp)[0] is str else f"{key}=[0.9,0.999]"
    return f"{key}=" + {int: "50", float: "0.5", bool: "true", str: "VALUE"}.get(tp, "VALUE")


def _bad(key: str, value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(
        f"config key '{key}' expects {_type_name(tp)}, got {value!r}{where}",
        f"rlport train {_example(key, tp)}",
    )


def _scalar_from_text(text: str) -> Any:
    """Parse an untyped override value (inside ``rollout.options``): int, float, bool, null or text."""
    low = text.lower()
    if low in _NULLS:
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return _unquote(text)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def coerce(key: str, value: Any, tp: Any, where: str = "") -> Any:
    """Turn ``value`` (command-line text or a YAML value) into ``tp``, or raise a ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULLS):
            return None
        try:
            return coerce(key, value, inner, where)
        except ConfigError:
            raise _bad(key, value, tp, where) from None
    if origin is list:
        (item_tp,) = args
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                body = text[1:-1].strip()
                items: list[Any] = [s.strip() for s in body.split(",")] if body else []
            else:
                items = [text]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise _bad(key, value, tp, where)
        try:
            return [coerce(key, item, item_tp, where) for item in items]
        except ConfigError:
            raise _bad(key, value, tp, where) from None
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(key, value, tp, where)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _bad(key, value, tp, where)
    if tp is int or tp is float:
        if isinstance(value, bool):  # bool is an int subclass, never a number setting
            raise _bad(key, value, tp, where)
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                pass
        raise _bad(key, value, tp, where)
    if tp is str:
        if isinstance(value, str):
            return _unquote(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(key, value, tp, where)
    raise ConfigError(f"config key '{key}' has an unsupported type {tp!r}", "report this as an rlport bug")


def _unknown_key(key: str, where: str) -> ConfigError:
    keys = list(all_keys())
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        # A misspelt section or leaf: match on the last part too.
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[near[0]]] if near else []
    fix = (
        f"did you mean '{close[0]}'? e.g. rlport train {close[0]}=..."
        if close
        else "run `rlport train --show-config` to list every key"
    )
    return ConfigError(f"unknown config key '{key}'{where}", fix)


def set_key(cfg: TrainConfig, key: str, value: Any, where: str = "") -> None:
    """Set dotted ``key`` of ``cfg`` to ``value`` (coerced to the field's type)."""
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        if isinstance(obj, dict):
            # Free-form mapping (rollout.options): the rest of the key is one entry name.
            name = ".".join(parts[i:])
            obj[name] = _scalar_from_text(value) if isinstance(value, str) else value
            return
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            raise _unknown_key(key, where)
        tp = _field_types(type(obj))[part]
        last = i == len(parts) - 1
        if last:
            if dataclasses.is_dataclass(tp):
                if not isinstance(value, dict):
                    raise ConfigError(
                        f"config key '{key}' is a section, not a value{where}",
                        f"set one of its keys, e.g. rlport train {key}.{dataclasses.fields(tp)[0].name}=...",
                    )
                for sub, sub_value in value.items():
                    set_key(cfg, f"{key}.{sub}", sub_value, where)
                return
            if typing.get_origin(tp) is dict and isinstance(value, dict):
                getattr(obj, part).update(value)
                return
            setattr(obj, part, coerce(key, value, tp, where))
            return
        child = getattr(obj, part)
        if not (dataclasses.is_dataclass(child) or isinstance(child, dict)):
            raise _unknown_key(key, where)
        obj = child


def parse_override(text: str) -> tuple[str, str]:
    """Split ``key=value`` (a leading ``+`` as in Hydra is accepted and ignored)."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} is not of the form key=value",
            "write overrides as dotted key=value pairs, e.g. rlport train trainer.steps=50",
        )
    key, value = text.split("=", 1)
    key = key.strip().lstrip("+")
    if not key:
        raise ConfigError(f"override {text!r} has no key", "e.g. rlport train trainer.steps=50")
    return key, value


def load_config(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    config_file: str | Path | None = None,
    base: TrainConfig | None = None,
) -> TrainConfig:
    """The default configuration, then ``config_file`` (YAML, same layout), then ``overrides``;
    checked for types and ranges."""
    cfg = base if base is not None else TrainConfig()
    if config_file is not None:
        cfg = apply_file(cfg, config_file)
    for text in overrides:
        key, value = parse_override(text)
        set_key(cfg, key, value, where=f" (in override '{text}')")
    check_ranges(cfg)
    return cfg


def apply_file(cfg: TrainConfig, path: str | Path) -> TrainConfig:
    from rlport.extras import import_optional

    yaml = import_optional("yaml", "train", purpose="reading a --config file")

    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file '{p}' does not exist", "pass an existing YAML file, e.g. --config my.yaml"
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{p}' is not valid YAML: {exc}", "fix the YAML syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{p}' must hold a mapping of sections", "see rlport train --show-config"
        )
    for section, body in data.items():
        set_key(cfg, str(section), body, where=f" (in {p})")
    return cfg


def _require(ok: bool, key: str, value: Any, expected: str, example: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' is {value!r}; expected {expected}", f"rlport train {example}")


def check_ranges(cfg: TrainConfig) -> None:
    """Values of the right type but outside what the run can use."""
    d, r, a, al, t = cfg.data, cfg.rollout, cfg.actor, cfg.algorithm, cfg.trainer
    _require(
        d.train_batch_size >= 1,
        "data.train_batch_size",
        d.train_batch_size,
        "at least 1",
        "data.train_batch_size=8",
    )
    _require(
        d.max_prompt_length >= 1,
        "data.max_prompt_length",
        d.max_prompt_length,
        "at least 1",
        "data.max_prompt_length=256",
    )
    _require(
        cfg.model.dtype in ("float32", "bfloat16", "float16"),
        "model.dtype",
        cfg.model.dtype,
        "one of float32, bfloat16, float16",
        "model.dtype=bfloat16",
    )
    _require(r.n >= 2, "rollout.n", r.n, "at least 2 (GRPO compares samples within a group)", "rollout.n=8")
    _require(
        r.temperature > 0,
        "rollout.temperature",
        r.temperature,
        "above 0 (GRPO needs sampling)",
        "rollout.temperature=1.0",
    )
    _require(0 < r.top_p <= 1, "rollout.top_p", r.top_p, "in (0, 1]", "rollout.top_p=1.0")
    _require(r.top_k >= 0, "rollout.top_k", r.top_k, "0 (off) or more", "rollout.top_k=0")
    _require(
        r.max_new_tokens >= 1,
        "rollout.max_new_tokens",
        r.max_new_tokens,
        "at least 1",
        "rollout.max_new_tokens=32",
    )
    _require(
        r.max_model_len > r.max_new_tokens,
        "rollout.max_model_len",
        r.max_model_len,
        f"more than rollout.max_new_tokens ({r.max_new_tokens})",
        f"rollout.max_model_len={r.max_new_tokens + 256}",
    )
    dtypes = ("", "float32", "bfloat16", "float16")
    for key in ("param_dtype", "reduce_dtype"):
        value = getattr(a.fsdp_config, key)
        _require(
            value in dtypes,
            f"actor.fsdp_config.{key}",
            value,
            "one of float32, bfloat16, float16 or empty",
            f"actor.fsdp_config.{key}=float32",
        )
    for key in (
        "tensor_model_parallel_size",
        "pipeline_model_parallel_size",
        "context_parallel_size",
        "expert_model_parallel_size",
    ):
        value = getattr(a.megatron, key)
        _require(value >= 1, f"actor.megatron.{key}", value, "at least 1", f"actor.megatron.{key}=1")
    vpp = a.megatron.virtual_pipeline_model_parallel_size
    _require(
        vpp is None or vpp >= 1,
        "actor.megatron.virtual_pipeline_model_parallel_size",
        vpp,
        "null or at least 1",
        "actor.megatron.virtual_pipeline_model_parallel_size=null",
    )
    _require(a.lr > 0, "actor.lr", a.lr, "above 0", "actor.lr=1e-5")
    _require(len(a.betas) == 2, "actor.betas", a.betas, "two numbers", "actor.betas=[0.9,0.999]")
    _require(a.grad_clip >= 0, "actor.grad_clip", a.grad_clip, "0 (off) or more", "actor.grad_clip=1.0")
    _require(a.ppo_epochs >= 1, "actor.ppo_epochs", a.ppo_epochs, "at least 1", "actor.ppo_epochs=1")
    _require(a.mini_batches >= 1, "actor.mini_batches", a.mini_batches, "at least 1", "actor.mini_batches=1")
    _require(
        a.micro_batch_size >= 1,
        "actor.micro_batch_size",
        a.micro_batch_size,
        "at least 1",
        "actor.micro_batch_size=16",
    )
    _require(
        al.adv_estimator == "grpo",
        "algorithm.adv_estimator",
        al.adv_estimator,
        "'grpo'",
        "algorithm.adv_estimator=grpo",
    )
    _require(
        al.adv_epsilon > 0, "algorithm.adv_epsilon", al.adv_epsilon, "above 0", "algorithm.adv_epsilon=1e-6"
    )
    _require(
        0 <= al.clip_ratio_low < 1,
        "algorithm.clip_ratio_low",
        al.clip_ratio_low,
        "in [0, 1)",
        "algorithm.clip_ratio_low=0.2",
    )
    _require(
        al.clip_ratio_high >= 0,
        "algorithm.clip_ratio_high",
        al.clip_ratio_high,
        "0 or more",
        "algorithm.clip_ratio_high=0.2",
    )
    _require(al.kl_coef >= 0, "algorithm.kl_coef", al.kl_coef, "0 or more", "algorithm.kl_coef=0.001")
    _require(t.steps >= 1, "trainer.steps", t.steps, "at least 1", "trainer.steps=50")
    _require(t.workers >= 1, "trainer.workers", t.workers, "at least 1", "trainer.workers=2")
    _require(t.nnodes >= 1, "trainer.nnodes", t.nnodes, "at least 1", "trainer.nnodes=1")
    _require(
        t.n_gpus_per_node >= 0,
        "trainer.n_gpus_per_node",
        t.n_gpus_per_node,
        "0 (trainer.workers / trainer.nnodes) or more",
        "trainer.n_gpus_per_node=8",
    )
    if t.n_gpus_per_node:
        _require(
            t.workers == t.nnodes * t.n_gpus_per_node,
            "trainer.workers",
            t.workers,
            f"trainer.nnodes x trainer.n_gpus_per_node = {t.nnodes * t.n_gpus_per_node}",
            f"trainer.workers={t.nnodes * t.n_gpus_per_node}",
        )
    _require(
        t.workers % t.nnodes == 0,
        "trainer.workers",
        t.workers,
        f"a multiple of trainer.nnodes ({t.nnodes}), the same number of workers on every node",
        f"trainer.workers={t.nnodes * max(1, t.workers // t.nnodes)}",
    )
    _require(
        t.startup_timeout_s > 0,
        "trainer.startup_timeout_s",
        t.startup_timeout_s,
        "above 0",
        "trainer.startup_timeout_s=120",
    )
    _require(
        d.train_batch_size % t.workers == 0,
        "data.train_batch_size",
        d.train_batch_size,
        f"a multiple of trainer.workers ({t.workers}) so every worker gets whole prompt groups",
        f"data.train_batch_size={t.workers * max(1, d.train_batch_size // t.workers)}",
    )
    per_worker = d.train_batch_size // t.workers
    _require(
        per_worker * r.n >= a.mini_batches,
        "actor.mini_batches",
        a.mini_batches,
        f"at most the sequences per worker and step ({per_worker * r.n})",
        "actor.mini_batches=1",
    )
    _require(
        t.save_every >= 0, "trainer.save_every", t.save_every, "0 (end only) or more", "trainer.save_every=10"
    )
    _require(
        t.ray_num_cpus >= 0,
        "trainer.ray_num_cpus",
        t.ray_num_cpus,
        "0 (all) or more",
        "trainer.ray_num_cpus=2",
    )
    _require(
        t.cpus_per_worker > 0,
        "trainer.cpus_per_worker",
        t.cpus_per_worker,
        "above 0",
        "trainer.cpus_per_worker=1",
    )
    if cfg.reward.custom:
        _require(
            ":" in cfg.reward.custom,
            "reward.custom",
            cfg.reward.custom,
            "module:function",
            "reward.custom=my_rewards:score",
        )


# -------------------------------------------------------------------------------------------------
# The documented default
# -------------------------------------------------------------------------------------------------


def _comments(cls: type) -> dict[str, str]:
    """Field comments from the source (``name: type = default  # comment``)."""
    import inspect

    out: dict[str, str] = {}
    try:
        src = inspect.getsource(cls)
    except OSError:  # pragma: no cover - source unavailable (zipped install)
        return out
    for line in src.splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith(("#", "class", '"')):
            name = stripped.split(":", 1)[0].strip()
            out[name] = stripped.split("#", 1)[1].strip()
    return out


def _yaml_value(value: Any) -> str:
    import json

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value) if (value == "" or any(c in value for c in ":#{}[],&*!|>'\"%@`")) else value
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_yaml(cfg: TrainConfig | None = None) -> str:
    """The configuration as commented YAML (the documented default when ``cfg`` is None)."""
    cfg = cfg if cfg is not None else TrainConfig()
    lines = ["# rlport train configuration. Override any key on the command line: section.key=value"]
    for section in dataclasses.fields(cfg):
        body = getattr(cfg, section.name)
        lines.append(f"{section.name}:")
        lines.extend(_yaml_fields(body, "  "))
    return "\n".join(lines) + "\n"


def _yaml_fields(body: Any, indent: str) -> list[str]:
    """One section's fields, a nested section (``actor.fsdp_config``) as an indented block."""
    comments = _comments(type(body))
    lines = []
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        nested = dataclasses.is_dataclass(value)
        text = f"{indent}{f.name}:" if nested else f"{indent}{f.name}: {_yaml_value(value)}"
        if f.name in comments:
            text = f"{text:<39} # {comments[f.name]}"  # a space before "#" even past column 40
        lines.append(text)
        if nested:
            lines.extend(_yaml_fields(value, indent + "  "))
    return lines
