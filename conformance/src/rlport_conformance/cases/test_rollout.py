"""Rollout cases, per claimed engine (``rt.make_engine(name, EngineConfig(model=folder))``) on tiny
Qwen2 models built at run time by ``rlport.rollout.tiny.build_tiny_model`` (no golden strings):

- greedy generation agrees with the trainer's teacher-forced forward pass: the same argmax token at
  every step until the first divergence, after it each side's token in the other's top-k; logprobs
  on the agreed prefix within the flash-attention rule against a float64 trainer;
- ``update_weights`` makes the engine generate what the new weights' trainer predicts;
- a sleep/wake round trip gives identical greedy output (tokens and logprobs bit for bit).

Prompts are chosen where the float64 trainer's top-1/top-2 logit margin stays clear over the whole
continuation, so low-precision near-ties cannot flip a token.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status
from rlport_conformance.tolerance import judge

NEW_TOKENS = 16
TOP_K = 5
MIN_MARGIN = 0.05
N_PROMPTS = 3
PROMPT_LEN = 12
INIT_RANGE = 0.3  # peakier next-token distributions than the default 0.02
DTYPE = "float32"


@dataclass
class Models:
    """Two tiny models (weights A and B) and the prompts chosen for them, or why there are none."""

    folder_a: Path | None = None
    folder_b: Path | None = None
    prompts: list[list[int]] = field(default_factory=list)
    error: str | None = None
    engines: dict[str, Any] = field(default_factory=dict)


def _trainer(folder: Path, dtype: Any, impl: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=impl).eval()


def _choose_prompts(folder_a: Path, folder_b: Path) -> list[list[int]]:
    """Prompts whose greedy continuation has a clear margin at every step under both weights."""
    import torch

    trainers = [_trainer(f, torch.float64, "eager") for f in (folder_a, folder_b)]
    gen = torch.Generator().manual_seed(2024)
    chosen: list[list[int]] = []
    for _ in range(48):
        prompt = torch.randint(6, 102, (1, PROMPT_LEN), generator=gen)
        clear = True
        for model in trainers:
            ids = prompt
            with torch.no_grad():
                for _ in range(NEW_TOKENS):
                    logits = model(ids).logits[0, -1]
                    top2 = logits.topk(2).values
                    if float(top2[0] - top2[1]) < MIN_MARGIN:
                        clear = False
                        break
                    ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
            if not clear:
                break
        if clear:
            chosen.append(prompt[0].tolist())
            if len(chosen) == N_PROMPTS:
                break
    return chosen


@pytest.fixture(scope="module")
def models() -> Any:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from rlport.rollout.tiny import build_tiny_model
    except ImportError as exc:
        yield Models(error=f"rlport.rollout.tiny.build_tiny_model is not importable: {exc}")
        return
    root = Path(tempfile.mkdtemp(prefix="rlport-conformance-rollout-"))
    out = Models()
    out.folder_a = build_tiny_model(root / "a", vocab=None, seed=0, initializer_range=INIT_RANGE)
    out.folder_b = build_tiny_model(root / "b", vocab=None, seed=1, initializer_range=INIT_RANGE)
    out.prompts = _choose_prompts(out.folder_a, out.folder_b)
    if len(out.prompts) < N_PROMPTS:
        out.error = f"found only {len(out.prompts)} prompts with a clear top-1/top-2 margin"
    yield out
    for engine in out.engines.values():
        with contextlib.suppress(Exception):
            engine.shutdown()


def _engine(rt: Any, models: Models, name: str) -> Any:
    from rlport.rollout.protocol import EngineConfig

    if name not in models.engines:
        config = EngineConfig(
            model=str(models.folder_a), device=rt.torch_device(), dtype=DTYPE, seed=0, max_model_len=256
        )
        models.engines[name] = rt.make_engine(name, config)
    return models.engines[name]


def _greedy(engine: Any, prompts: list[list[int]], new_tokens: int = NEW_TOKENS) -> list[Any]:
    from rlport.rollout.protocol import SamplingParams

    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=new_tokens, logprobs_top_k=TOP_K, seed=0)
    return [gens[0] for gens in engine.generate(prompts, params)]


def _teacher_forced(
    folder: Path, dtype: Any, impl: str, prompts: list[list[int]], outputs: list[Any]
) -> list[Any]:
    """Per prompt: the trainer's log-softmax (float64) at every generated position, given the engine's
    own tokens as the prefix."""
    import torch

    model = _trainer(folder, dtype, impl)
    result = []
    with torch.no_grad():
        for prompt, gen in zip(prompts, outputs, strict=True):
            ids = torch.tensor([prompt + gen.token_ids[:-1]])
            logits = model(ids).logits[0, len(prompt) - 1 :].double()
            result.append(torch.log_softmax(logits, dim=-1))
    return result


def _agreement(
    case: CaseContext, folder: Path, prompts: list[list[int]], outputs: list[Any], label: str
) -> None:
    """Record tokens-until-divergence, top-k containment and the logprob tolerance for ``outputs``."""
    import torch

    ref = _teacher_forced(folder, torch.float64, "eager", prompts, outputs)
    plain = _teacher_forced(folder, torch.float32, "eager", prompts, outputs)
    agreed, total, engine_err, plain_err, rounding = 0, 0, 0.0, 0.0, 0.0
    problems = []
    for p, (gen, lp64, lp32) in enumerate(zip(outputs, ref, plain, strict=True)):
        if len(gen.token_ids) != NEW_TOKENS:
            problems.append(f"prompt {p}: {len(gen.token_ids)} tokens generated, asked for {NEW_TOKENS}")
            continue
        diverged = None
        for j, token in enumerate(gen.token_ids):
            total += 1
            best = int(lp64[j].argmax())
            if diverged is None and token == best:
                agreed += 1
                engine_err = max(engine_err, abs(gen.logprobs[j] - float(lp64[j, token])))
                plain_err = max(plain_err, abs(float(lp32[j, token]) - float(lp64[j, token])))
                value = torch.tensor(float(lp64[j, token]), dtype=torch.float64)
                rounding = max(rounding, float((value.float().double() - value).abs()))
                continue
            diverged = j if diverged is None else diverged
            trainer_top = set(lp64[j].topk(TOP_K).indices.tolist())
            engine_top = set((gen.top_logprobs or [{}] * len(gen.token_ids))[j])
            if token not in trainer_top or (engine_top and best not in engine_top):
                problems.append(
                    f"prompt {p} step {j}: engine token {token} / trainer argmax {best} not in each other's top-{TOP_K}"
                )
                break
    case.metric(**{f"{label}agreed_tokens": agreed, f"{label}compared_tokens": total})
    if problems:
        case.fail(f"{label}" + "; ".join(problems))
    if agreed == 0:
        case.fail(f"{label}no generated token agrees with the trainer's argmax")
        return
    case.judge(judge(engine_err, plain_err, rounding), prefix=f"{label}logprob_")


def _ready(case: CaseContext, models: Models) -> bool:
    if models.error:
        case.record(Status.INTERNAL_ERROR, models.error)
        return False
    return True


@pytest.mark.rlport_case("rollout.greedy_agreement")
def test_greedy_agreement(case: CaseContext, rt: Any, models: Models, perf: Any) -> None:
    if not _ready(case, models):
        return
    engine = _engine(rt, models, case.facet["engine"])
    outputs = _greedy(engine, models.prompts)
    _agreement(case, models.folder_a, models.prompts, outputs, "")
    # Throughput beside the verdict: 8 prompts x 32 new tokens, median of 3.
    prompts = [models.prompts[i % len(models.prompts)] for i in range(8)]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        _greedy(engine, prompts, 32)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    perf.record(
        f"rollout.generate[{case.facet['engine']}-{DTYPE}-8x32]",
        8 * 32 / seconds,
        "tokens/s",
        "output_tokens_per_second",
        3,
        seconds=seconds,
    )


@pytest.mark.rlport_case("rollout.update_weights")
def test_update_weights(case: CaseContext, rt: Any, models: Models) -> None:
    import torch

    if not _ready(case, models):
        return
    engine = _engine(rt, models, case.facet["engine"])
    before = _greedy(engine, models.prompts)
    weights_b = _trainer(models.folder_b, torch.float32, "eager").state_dict()
    engine.update_weights(list(weights_b.items()))
    after = _greedy(engine, models.prompts)
    try:
        changed = [a.token_ids != b.token_ids for a, b in zip(after, before, strict=True)]
        case.check(any(changed), "update_weights left every greedy output unchanged")
        _agreement(case, models.folder_b, models.prompts, after, "new_weights_")
    finally:
        weights_a = _trainer(models.folder_a, torch.float32, "eager").state_dict()
        engine.update_weights(list(weights_a.items()))


@pytest.mark.rlport_case("rollout.sleep_wake")
def test_sleep_wake(case: CaseContext, rt: Any, models: Models, perf: Any) -> None:
    from rlport.errors import EngineError

    if not _ready(case, models):
        return
    engine = _engine(rt, models, case.facet["engine"])
    tags = tuple(engine.capabilities.get("sleep_tags", ()))
    if not tags:
        if case.claimed:
            case.fail(f"engine {engine.name!r} offers no sleep tags, but the plugin claims sleep")
        else:
            case.record(Status.NOT_SUPPORTED, f"engine {engine.name!r} offers no sleep tags")
        return
    first = _greedy(engine, models.prompts)
    t0 = time.perf_counter()
    try:
        engine.sleep(tags)
    except EngineError as exc:
        case.record(
            Status.FAIL if case.claimed else Status.NOT_SUPPORTED, f"sleep{tags} refused: {exc.message}"
        )
        return
    t1 = time.perf_counter()
    engine.wake_up(tags)
    t2 = time.perf_counter()
    second = _greedy(engine, models.prompts)
    same_tokens = all(a.token_ids == b.token_ids for a, b in zip(first, second, strict=True))
    same_lps = all(a.logprobs == b.logprobs for a, b in zip(first, second, strict=True))
    case.check(same_tokens, "greedy tokens differ after a sleep/wake round trip")
    case.check(same_lps, "greedy logprobs differ (not bit for bit) after a sleep/wake round trip")
    perf.record(f"rollout.sleep[{engine.name}]", t1 - t0, "s", "sleep_seconds", 1)
    perf.record(f"rollout.wake[{engine.name}]", t2 - t1, "s", "wake_seconds", 1)
