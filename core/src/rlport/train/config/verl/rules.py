"""The vocabulary the verl key table (:mod:`.table`) is written in: one :class:`Rule` per row,
made by its constructors, the converters that turn verl's values into rlport's, and the reasons
that several rows share.

- :func:`Map`: the value goes to an rlport setting (converted where verl counts differently);
- :func:`Deprecated`: a key verl deprecates but still honours, honoured as verl does;
- :func:`Accept`: rlport already behaves as the value asks (listed ``values``), so there is no
  setting; any other value, verl's default included, is refused with the reason;
- :func:`Refuse`: rlport does not do it; the reason says why, or which issue plans it. A refused
  key set to verl's own default is accepted (a full verl config file names them all), and has no
  effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
        verl, kind, rlport, unless_null, reason=note, deprecated_for=current, global_count=global_count
    )


def Accept(verl: str, reason: str, values: tuple[Any, ...] = ()) -> Rule:
    """rlport behaves as ``values`` ask (``()``: as any value asks: it has no effect here)."""
    return Rule(verl, "accept", values=values, reason=reason)


def Refuse(verl: str, reason: str) -> Rule:
    return Rule(verl, "refuse", reason=reason)


class Skip:
    """A converted value that leaves the rlport setting at its default (verl's ``null``)."""


SKIP = Skip()


# -- converters: verl's value -> rlport's (SKIP: leave the rlport setting at its default) ---------


def unless_null(value: Any) -> Any:
    return SKIP if value is None else value


def positive_or_zero(value: Any) -> Any:
    """verl's ``-1`` / ``null`` for "off" is rlport's 0."""
    if value is None:
        return 0
    return 0 if int(value) < 0 else value


def as_list(value: Any) -> Any:
    """One string (a file, a logger) or a list of them: a list."""
    return [value] if isinstance(value, str) else value


def module_names(value: Any) -> Any:
    """verl's module names: one name (``all-linear``), a list, or ``null`` for none."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def as_text(value: Any) -> Any:
    """A threshold verl takes as a number or a string (``2.0``, ``0.5_5.0``): rlport's string."""
    return value if value is None or isinstance(value, str) else str(value)


def empty_if_null(value: Any) -> Any:
    return "" if value is None else value


def actor_strategy(value: Any) -> Any:
    """verl's FSDP (``fsdp``, ``fsdp2``) is rlport's empty ``actor.strategy``: the default for
    the worker count (``config/derive.py``)."""
    return "" if value in ("fsdp", "fsdp2") else value


def resume_mode(value: Any) -> Any:
    return "latest" if value == "auto" else SKIP


def critic_warmup(value: Any) -> Any:
    """verl trains only the critic while the step (from 1) is below ``critic_warmup``: its N is
    rlport's N - 1 first steps."""
    return max(0, int(value) - 1) if value else 0


# -- reasons several rows give --------------------------------------------------------------------

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
