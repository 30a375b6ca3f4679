"""The built-in rollout engine over Hugging Face transformers, on any torch device.

Attention goes through the selected rlport backend (``attn_implementation="rlport"``). Generation is
a plain batched decode loop: prompts are left-padded, the KV cache lives only for one
:meth:`HFEngine.generate` call. Sampling is inverse-CDF on uniforms drawn per sample: with
``SamplingParams.seed`` set each sample has its own ``torch.Generator`` seeded by the rule of
:mod:`rlport.rollout.seeding` (so a sample does not depend on what else is in the batch); without it
the engine's generator, seeded once from ``EngineConfig.seed``, draws them and advances.

Logprobs, exactly: for every generated token, ``log_softmax`` (in float32) of the model's raw
next-token logits at temperature 1, with no top-k/top-p filtering, evaluated at the chosen token.
That is what a trainer's teacher-forced forward pass computes for the same token, and what vLLM
reports with ``logprobs_mode="raw_logprobs"``. Sampling itself uses the processed distribution
(temperature, then top-k, then top-p); ``temperature == 0`` is greedy (argmax of raw logits).

Stopping: a generation stops after the first token in ``params.stop_token_ids`` (kept in the
output, ``finish_reason="stop"``) or after ``max_new_tokens`` (``"length"``). The model's EOS id is
*not* implied: pass it in ``stop_token_ids``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from rlport.errors import EngineError
from rlport.rollout.adapter import check_usable
from rlport.rollout.protocol import EngineConfig, Generation, SamplingParams
from rlport.rollout.seeding import sample_seeds
from rlport.rollout.weights import check_named_tensors


def cache_keyword(model: torch.nn.Module) -> str:
    """The name under which ``model``'s forward takes the KV cache: ``cache`` from transformers
    5.25 (which deprecates ``past_key_values``, to be removed in 5.40), ``past_key_values``
    before."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


SLEEP_TAGS = ("weights", "kv_cache")


def _filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Apply temperature, top-k and top-p (in that order) to ``(batch, vocab)`` float32 logits."""
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass strictly before it already reaches top_p (the top-1 always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Per row of ``(batch, vocab)`` probabilities, the token whose cumulative-probability interval
    holds that row's uniform in [0, 1): an exact draw from the row's distribution that never picks a
    zero-probability token."""
    cdf = torch.cumsum(probs.float(), dim=-1)  # float32: every device has it
    chosen = torch.searchsorted(cdf, (uniforms * cdf[:, -1])[:, None], right=True).squeeze(-1)
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)  # rounding can overshoot it
    return torch.minimum(chosen, last)


def check_params(params: SamplingParams, prompts: list[list[int]], max_model_len: int, engine: str) -> None:
    """Refuse sampling parameters and prompts no engine can honour, naming the bad value."""
    problems = []
    if params.n < 1:
        problems.append(f"n={params.n} (expected >= 1)")
    if params.temperature < 0:
        problems.append(f"temperature={params.temperature} (expected >= 0)")
    if not 0 < params.top_p <= 1:
        problems.append(f"top_p={params.top_p} (expected 0 < top_p <= 1)")
    if params.top_k < 0:
        problems.append(f"top_k={params.top_k} (expected >= 0, 0 disables it)")
    if params.max_new_tokens < 1:
        problems.append(f"max_new_tokens={params.max_new_tokens} (expected >= 1)")
    if params.logprobs_top_k < 0:
        problems.append(f"logprobs_top_k={params.logprobs_top_k} (expected >= 0)")
    if params.prompt_offset < 0:
        problems.append(f"prompt_offset={params.prompt_offset} (expected >= 0)")
    if problems:
        raise EngineError(
            f"{engine} engine: invalid sampling parameters: {'; '.join(problems)}",
            "construct SamplingParams with values in the ranges given",
        )
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise EngineError(
                f"{engine} engine: prompt {i} is empty", "give every prompt at least one token id"
            )
        if len(prompt) + params.max_new_tokens > max_model_len:
            raise EngineError(
                f"{engine} engine: prompt {i} has {len(prompt)} tokens; with max_new_tokens="
                f"{params.max_new_tokens} that exceeds max_model_len={max_model_len}",
                "shorten the prompt, lower max_new_tokens, or raise EngineConfig.max_model_len",
            )


class HFEngine:
    """:class:`rlport.rollout.RolloutEngine` over a transformers causal LM held in this process."""

    name = "hf"

    def __init__(self, config: EngineConfig) -> None:
        from transformers import AutoModelForCausalLM

        import rlport

        self.config = config
        dtype = getattr(torch, config.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise EngineError(
                f"hf engine: dtype {config.dtype!r} is not a torch dtype",
                "use EngineConfig(dtype='float32') or 'bfloat16' / 'float16'",
            )
        attn = config.options.get("attn_implementation")
        if attn is None:
            from rlport.attention.transformers_integration import register

            attn = register()
        self.device = torch.device(config.device)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                config.model,
                attn_implementation=attn,
                dtype=dtype,
                trust_remote_code=config.trust_remote_code,
            )
        except (OSError, ValueError) as exc:
            raise EngineError(
                f"hf engine: cannot load a causal LM from {config.model!r}: {exc}",
                "point EngineConfig.model at a local Hugging Face model folder (config.json + weights)",
            ) from exc
        self.model = model.to(self.device).eval()
        self._cache_kw = cache_keyword(self.model)
        with torch.no_grad():  # weights read from a file may be memory-mapped, which sleep cannot release
            for tensor in [*self.model.parameters(), *self.model.buffers()]:
                if not tensor.untyped_storage().resizable():
                    tensor.data = tensor.data.clone()
        self._memory = rlport.current().tagged_memory()
        self._memory.register("weights", self.model)
        self._asleep: set[str] = set()
        self._closed = False
        self._generator = torch.Generator().manual_seed(config.seed)  # host: see _uniforms
        self.capabilities: dict[str, Any] = {
            "update_weights": True,
            "weights_process": "trainer",
            "sleep_tags": SLEEP_TAGS,
            "kv_cache": "per call: allocated inside generate() and freed on return, so sleeping "
            "'kv_cache' releases nothing",
            "logprobs": "raw (log_softmax of unprocessed logits, temperature 1)",
            "seeded_sampling": True,
            "attn_implementation": attn,
            "device": str(self.device),
        }

    # -- helpers -----------------------------------------------------------------------------------
    def _check_usable(self, what: str) -> None:
        check_usable(self.name, what, self._closed, self._asleep)

    def _check_tags(self, tags: tuple[str, ...]) -> None:
        unknown = [t for t in tags if t not in SLEEP_TAGS]
        if unknown:
            raise EngineError(
                f"hf engine: unknown sleep tag(s) {unknown}; supported: {SLEEP_TAGS}",
                "use tags from engine.capabilities['sleep_tags']",
            )

    def _uniforms(self, n_prompts: int, params: SamplingParams) -> torch.Tensor:
        """``(rows, max_new_tokens)`` float32 uniforms in [0, 1), one row per sample: from the sample's
        own seed (:func:`rlport.rollout.seeding.sample_seeds`) when ``params.seed`` is set, else from
        the engine's generator. Drawn on the host, so a seed gives the same draws on every device."""
        if params.seed is None:
            return torch.rand((n_prompts * params.n, params.max_new_tokens), generator=self._generator)
        rows = [
            torch.rand(params.max_new_tokens, generator=torch.Generator().manual_seed(seed))
            for seeds in sample_seeds(params, n_prompts)
            for seed in seeds
        ]
        return torch.stack(rows)

    # -- protocol ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Generation]]:
        """Return ``params.n`` generations per prompt (see the module docstring for semantics)."""
        self._check_usable("generate()")
        check_params(params, prompts, self.config.max_model_len, self.name)
        from transformers import DynamicCache

        rows = [i for i in range(len(prompts)) for _ in range(params.n)]
        uniforms = None if params.temperature == 0 else self._uniforms(len(prompts), params).to(self.device)
        width = max(len(p) for p in prompts)
        pad = self.model.config.pad_token_id or 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        stops = torch.tensor(sorted(set(params.stop_token_ids)), dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)

        tokens, logprobs, tops = [], [], []
        done = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
        step_ids, step_pos = ids, positions
        for step in range(params.max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_pos,
                **{self._cache_kw: cache},
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            if uniforms is None:
                chosen = logits.argmax(dim=-1)
            else:
                chosen = inverse_cdf(torch.softmax(_filter_logits(logits, params), dim=-1), uniforms[:, step])
            tokens.append(chosen)
            logprobs.append(logp.gather(-1, chosen[:, None]).squeeze(-1))
            if params.logprobs_top_k:
                tops.append(torch.topk(logp, min(params.logprobs_top_k, logp.shape[-1]), dim=-1))
            if stops.numel():
                done = done | torch.isin(chosen, stops)
            if step + 1 == params.max_new_tokens or bool(done.all()):
                break
            step_ids = chosen[:, None]
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        del cache
        return self._collect(rows, len(prompts), params, tokens, logprobs, tops)

    def _collect(
        self,
        rows: list[int],
        n_prompts: int,
        params: SamplingParams,
        tokens: list[torch.Tensor],
        logprobs: list[torch.Tensor],
        tops: list[Any],
    ) -> list[list[Generation]]:
        token_rows = torch.stack(tokens, dim=1).tolist()
        logprob_rows = torch.stack(logprobs, dim=1).tolist()
        top_ids = torch.stack([t.indices for t in tops], 1).tolist() if tops else None
        top_vals = torch.stack([t.values for t in tops], 1).tolist() if tops else None
        stops = set(params.stop_token_ids)
        result: list[list[Generation]] = [[] for _ in range(n_prompts)]
        for r, prompt_index in enumerate(rows):
            toks, lps = token_rows[r], logprob_rows[r]
            end = next((k + 1 for k, t in enumerate(toks) if t in stops), None)
            length = end if end is not None else len(toks)
            top_logprobs = None
            if top_ids is not None and top_vals is not None:
                top_logprobs = [dict(zip(top_ids[r][k], top_vals[r][k], strict=True)) for k in range(length)]
            result[prompt_index].append(
                Generation(
                    prompt_index=prompt_index,
                    token_ids=toks[:length],
                    logprobs=lps[:length],
                    finish_reason="stop" if end is not None else "length",
                    top_logprobs=top_logprobs,
                )
            )
        return result

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Copy trainer tensors (Hugging Face names) into the model; later generates use them.

        Strict on the names given: a name the model does not have, or a shape that differs, is an
        :class:`EngineError` naming it, raised before any tensor is written."""
        self._check_usable("update_weights()")
        items = list(named_tensors)
        state = self.model.state_dict()
        check_named_tensors("hf", self.config.model, items, {n: tuple(t.shape) for n, t in state.items()})
        with torch.no_grad():
            for name, tensor in items:
                state[name].copy_(tensor)

    def sleep(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        """Release ``tags``: ``weights`` parks parameters and buffers off the device (bit-exact on
        wake); ``kv_cache`` has nothing persistent to release in this engine."""
        if self._closed:
            raise EngineError("hf engine: sleep() after shutdown()", "create a new engine")
        self._check_tags(tags)
        if "weights" in tags:
            self._memory.sleep("weights")
        self._asleep.update(tags)

    def wake_up(self, tags: tuple[str, ...] = SLEEP_TAGS) -> None:
        if self._closed:
            raise EngineError("hf engine: wake_up() after shutdown()", "create a new engine")
        self._check_tags(tags)
        if "weights" in tags:
            self._memory.wake_up("weights")
        self._asleep.difference_update(tags)

    def shutdown(self) -> None:
        if self._closed:
            return
        import rlport

        self._closed = True
        del self.model
        rlport.current().memory.empty_cache()


def create(config: EngineConfig) -> HFEngine:
    """Factory named by the ``hf`` engine offer."""
    return HFEngine(config)
