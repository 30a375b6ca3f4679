"""Rollout engine over SGLang's offline ``sglang.Engine`` (SGLang is imported only when an engine
is made; ``pip install "rlport[sglang]"``).

Tested only against a fake ``sglang`` module (``core/tests/test_rollout_sglang.py``: a fake
``Engine`` that records every call, checks its arguments' types, shapes and tags, and computes with
torch on a real tiny model). SGLang cannot be installed beside torch 2.13 here, so this adapter has
never run against SGLang itself. The API below was read from SGLang's source
(``python/sglang/srt/entrypoints/engine.py``, ``srt/sampling/sampling_params.py``,
``srt/server_args.py``):

- ``Engine(model_path, dtype, random_seed, context_length, skip_tokenizer_init=True, device,
  base_gpu_id, **options)``: :func:`rlport.rollout.adapter.engine_kwargs` maps
  :class:`~rlport.rollout.protocol.EngineConfig` as for vLLM; sleep needs the option
  ``enable_memory_saver=True``;
- ``Engine.generate(input_ids=[ids, ...], sampling_params=[dict, ...], return_logprob=True,
  top_logprobs_num=k)``: one request per sample (``n=1`` each, so every sample carries its own
  ``sampling_seed``), answered in order with ``{"output_ids": [...], "meta_info":
  {"output_token_logprobs": [(logprob, token_id, text), ...], "output_top_logprobs": [[(logprob,
  token_id, text), ...] per position], "finish_reason": {"type": "stop" | "length" | "abort", ...}}}``;
- logprobs are the model's raw ones (``log_softmax`` of the logits before temperature, top-k and
  top-p, as the ``hf`` engine reports them) because the adapter sets
  ``SGLANG_RETURN_ORIGINAL_LOGPROB=true`` in the environment SGLang's scheduler inherits (without
  it SGLang reports logprobs after temperature);
- sampling parameters: ``max_new_tokens``, ``temperature`` (0 is greedy), ``top_p``, ``top_k``
  (``-1`` disables it, rlport's ``0``), ``stop_token_ids``, ``ignore_eos=True`` (only
  ``stop_token_ids`` stop, as in the other engines), ``no_stop_trim=True`` (the stop token stays in
  the output), ``sampling_seed``;
- weights: ``update_weights_from_tensor(named_tensors, load_format=None, flush_cache=True)``, which
  shares the tensors with SGLang's scheduler through torch's tensor sharing itself (so the trainer's
  weight transport hands it tensors directly: ``capabilities["weights_process"] == "engine"``);
- sleep: ``release_memory_occupation(tags)`` / ``resume_memory_occupation(tags)`` with SGLang's
  tags ``weights``, ``kv_cache`` and its captured-graph tag; weights may be updated while only the
  KV cache (and graphs) sleep, which lowers the peak during a sync;
- ``shutdown()``.

Seeds: SGLang's per-request seed is documented to take effect with
``enable_deterministic_inference=True`` (``capabilities["seeded_sampling"]`` says whether it is set).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any

from rlport.errors import EngineError
from rlport.extras import install_command
from rlport.rollout.adapter import check_sleep_tags, check_usable, engine_kwargs, start
from rlport.rollout.hf_engine import check_params
from rlport.rollout.protocol import EngineConfig, Generation, SamplingParams
from rlport.rollout.weights import check_named_tensors, checkpoint_shapes
from rlport.settings import set_env

RAW_LOGPROBS_ENV = "SGLANG_RETURN_ORIGINAL_LOGPROB"
GRAPH_TAG = "cuda_graph"  # SGLang's name for the memory of its captured graphs
SLEEP_TAGS = ("weights", "kv_cache", GRAPH_TAG)
CONFIG_NAMES = {
    "model": "model_path",
    "dtype": "dtype",
    "seed": "random_seed",
    "max_model_len": "context_length",
    "trust_remote_code": "trust_remote_code",
}
FIXED = {"skip_tokenizer_init": True}


def sample_seeds(seed: int | None, count: int) -> list[int | None]:
    """One seed per sample, derived from the call's seed (``None``: SGLang draws its own)."""
    if seed is None:
        return [None] * count
    rng = random.Random(seed)
    return [rng.getrandbits(31) for _ in range(count)]


def _raw_logprobs_env() -> None:
    value = os.environ.get(RAW_LOGPROBS_ENV)
    if value is not None and value.strip().lower() not in ("1", "true"):
        raise EngineError(
            f"sglang engine: {RAW_LOGPROBS_ENV}={value!r} makes SGLang report logprobs after "
            "temperature, but the trainer compares them with the model's raw logprobs",
            f"unset {RAW_LOGPROBS_ENV} (the engine sets it to true)",
        )
    set_env(RAW_LOGPROBS_ENV, "true")  # restored by rlport.bootstrap.reset()


class SGLangEngine:
    """:class:`rlport.rollout.RolloutEngine` over ``sglang.Engine`` (scheduler in its own process)."""

    name = "sglang"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._shapes = checkpoint_shapes(config.model, self.name)
        device, _, index = config.device.partition(":")
        options = {"device": device, **({"base_gpu_id": int(index)} if index else {}), **config.options}
        kwargs = engine_kwargs(self.name, config, options, names=CONFIG_NAMES, fixed=FIXED)
        _raw_logprobs_env()
        try:
            import sglang
        except ImportError as exc:
            raise EngineError(
                f"sglang engine: SGLang cannot be imported ({exc})",
                f"{install_command('sglang')}  (SGLang pins its own torch; see its install guide)",
            ) from exc
        self.engine = start(
            self.name,
            sglang.Engine,
            kwargs,
            "check the options against `python -m sglang.launch_server --help` (same names, dashes for "
            "underscores)",
        )
        self._closed = False
        self._asleep: set[str] = set()
        saver = bool(options.get("enable_memory_saver", False))
        self.capabilities: dict[str, Any] = {
            "update_weights": True,
            "weights_process": "engine",
            "sleep_tags": SLEEP_TAGS if saver else (),
            "sleep_note": "SGLang memory saver"
            if saver
            else "engine built without enable_memory_saver=True (SGLang releases memory only with it)",
            "kv_cache": "paged, held by the engine for its lifetime",
            "logprobs": f"raw ({RAW_LOGPROBS_ENV}=true)",
            "seeded_sampling": bool(options.get("enable_deterministic_inference", False)),
        }

    # -- helpers -----------------------------------------------------------------------------------
    def _sampling(self, params: SamplingParams, seed: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": 1,
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or -1,
            "stop_token_ids": list(params.stop_token_ids),
            "ignore_eos": True,
            "no_stop_trim": True,
        }
        if seed is not None:
            out["sampling_seed"] = seed
        return out

    def _generation(self, index: int, output: dict[str, Any], k: int) -> Generation:
        ids = [int(t) for t in output["output_ids"]]
        meta = output["meta_info"]
        steps = meta.get("output_token_logprobs") or []
        if [int(s[1]) for s in steps] != ids:
            raise EngineError(
                f"sglang engine: the logprobs name tokens {[int(s[1]) for s in steps][:8]} for output "
                f"tokens {ids[:8]} ({len(steps)} vs {len(ids)})",
                "report this with your SGLang version: `pip show sglang`",
            )
        reason = (meta.get("finish_reason") or {}).get("type", "length")
        if reason == "abort":
            raise EngineError(
                f"sglang engine: request aborted: {meta['finish_reason']}",
                "check the prompt length against context_length and the engine's log",
            )
        tops = None
        if k:
            tops = [
                {int(tid): float(lp) for lp, tid, *_ in position} for position in meta["output_top_logprobs"]
            ]
        return Generation(
            prompt_index=index,
            token_ids=ids,
            logprobs=[float(s[0]) for s in steps],
            finish_reason="stop" if reason == "stop" else "length",
            top_logprobs=tops,
        )

    # -- protocol ----------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Return ``params.n`` generations per prompt, with raw per-token logprobs."""
        check_usable(self.name, "generate()", self._closed, self._asleep)
        check_params(params, prompts, self.config.max_model_len, self.name)
        rows = [i for i in range(len(prompts)) for _ in range(params.n)]
        seeds = sample_seeds(params.seed, len(rows))
        extra = {"top_logprobs_num": params.logprobs_top_k} if params.logprobs_top_k else {}
        outputs = self.engine.generate(
            input_ids=[list(prompts[i]) for i in rows],
            sampling_params=[self._sampling(params, s) for s in seeds],
            return_logprob=True,
            **extra,
        )
        if len(outputs) != len(rows):
            raise EngineError(
                f"sglang engine: {len(outputs)} outputs for {len(rows)} requests",
                "report this with your SGLang version: `pip show sglang`",
            )
        result: list[list[Generation]] = [[] for _ in prompts]
        for row, output in zip(rows, outputs, strict=True):
            result[row].append(self._generation(row, output, params.logprobs_top_k))
        return result

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load trainer tensors (Hugging Face names) through ``update_weights_from_tensor``; later
        generates use them. Allowed while only ``kv_cache`` (and graphs) sleep; names and shapes are
        checked against the model folder's checkpoint first."""
        check_usable(self.name, "update_weights()", self._closed, self._asleep & {"weights"})
        items = [(name, tensor.detach()) for name, tensor in named_tensors]
        check_named_tensors(self.name, self.config.model, items, self._shapes)
        self.engine.update_weights_from_tensor(items, load_format=None, flush_cache=True)

    def sleep(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """``release_memory_occupation(tags)``: each tag sleeps on its own."""
        caps = self.capabilities
        check_sleep_tags(self.name, "sleep", tags, caps["sleep_tags"], caps["sleep_note"], self._closed)
        todo = [t for t in tags if t not in self._asleep]
        if todo:
            self.engine.release_memory_occupation(tags=todo)
        self._asleep.update(todo)

    def wake_up(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None:
        """``resume_memory_occupation(tags)`` for the tags that sleep."""
        caps = self.capabilities
        check_sleep_tags(self.name, "wake_up", tags, caps["sleep_tags"], caps["sleep_note"], self._closed)
        todo = [t for t in tags if t in self._asleep]
        if todo:
            self.engine.resume_memory_occupation(tags=todo)
        self._asleep.difference_update(todo)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.engine.shutdown()
        del self.engine


def create(config: EngineConfig) -> SGLangEngine:
    """Factory named by the ``sglang`` engine offer."""
    return SGLangEngine(config)
