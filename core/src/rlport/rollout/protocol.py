"""The rollout engine protocol every engine adapter implements (no torch import here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``n`` completions per prompt; ``top_k=0`` and ``top_p=1.0`` disable those
    filters; ``temperature=0`` is greedy.

    Seeding, the same on every engine (:mod:`rlport.rollout.seeding`): with ``seed`` set, sample ``j``
    of the call's prompt ``i`` is drawn from its own random stream seeded with
    ``sample_seed(seed, prompt_offset + i, j)``; an adapter gets them all from
    ``sample_seeds(params, len(prompts))`` and hands each to its engine's per-request seed (one
    request per sample where the engine would otherwise derive the ``n`` seeds itself). So copies of
    one prompt in one call are independent draws, the same call with the same seed gives the same
    samples, and a batch split across workers, each call given the global position of its first prompt
    as ``prompt_offset``, samples as it would whole. ``seed=None``: the engine's own generator
    (seeded once from :attr:`EngineConfig.seed`) draws, advancing from call to call."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 32
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs_top_k: int = 0
    prompt_offset: int = 0


@dataclass
class Generation:
    """One completion: the generated ids (stop token included if hit), the logprob of each
    generated token under the sampling distribution's model (before temperature, as the trainer
    computes it), and optionally the top-k alternatives per position as ``{token_id: logprob}``."""

    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "length"
    top_logprobs: list[dict[int, float]] | None = None


@dataclass(frozen=True)
class EngineConfig:
    """What every engine is constructed with. ``model`` is a local Hugging Face folder;
    ``device`` the torch device string from the active device plugin; ``trust_remote_code`` lets
    the engine run the folder's own model code (its ``config.json`` ``auto_map``), as transformers'
    argument of that name; ``options`` carries engine-specific arguments after the device plugins'
    ``rlport_engine_args`` adjustments."""

    model: str
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    max_model_len: int = 512
    trust_remote_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer drives. ``capabilities`` says what the engine can really do on this
    platform (for example ``{"sleep_tags": ("weights", "kv_cache"), "update_weights": True}``);
    an operation outside them raises :class:`rlport.errors.EngineError`, never pretends.
    ``capabilities["weights_process"]`` says where ``update_weights`` puts the tensors: ``"trainer"``
    (the model is in the caller's process), ``"engine"`` (the engine's own API shares them with its
    processes) or ``"worker"`` (the model is in worker processes, reached by a weight transport
    through :meth:`WorkerWeightsEngine.receive_weights`)."""

    name: str
    capabilities: dict[str, Any]

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Return, per prompt, ``params.n`` generations."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load trainer weights (Hugging Face parameter names); later calls serve them."""
        ...

    def sleep(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def shutdown(self) -> None: ...


@runtime_checkable
class WorkerWeightsEngine(Protocol):
    """An engine whose model lives in worker processes (``capabilities["weights_process"] ==
    "worker"``): a weight transport reaches it through :meth:`receive_weights`."""

    def receive_weights(self, unpack: str, payload: Any) -> None:
        """In every process holding the model, call the function ``unpack`` (``module:attr``) on
        ``payload`` to get ``(name, tensor)`` pairs and load them as :meth:`RolloutEngine.update_weights`
        would; return when every process has loaded them (the sender may free ``payload`` then)."""
        ...
