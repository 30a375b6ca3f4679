"""Rollout cases, per claimed engine (``rt.make_engine(name, EngineConfig(model=folder))``) on tiny
Qwen2 models built at run time by ``rlport.rollout.tiny.build_tiny_model`` (no golden strings):

- greedy generation agrees with the trainer's teacher-forced forward pass: the same argmax token at
  every step until the first divergence, after it each side's token in the other's top-k; logprobs
  on the agreed prefix within the flash-attention rule against a float64 trainer;
- ``update_weights`` makes the engine generate what the new weights' trainer predicts;
- a sleep/wake round trip gives identical greedy output (tokens and logprobs bit for bit);
- identical prompts in one call are sampled independently (``rollout.independent_samples``), at
  temperature 1 on the prompt whose two-token distribution is the most spread, with a flake bound
  computed from that distribution; the same seed repeats the samples, another seed or another
  ``prompt_offset`` (the next worker's slice) does not (the rule of :mod:`rlport.rollout.seeding`).

Prompts are chosen where the float64 trainer's top-1/top-2 logit margin stays clear over the whole
continuation, so low-precision near-ties cannot flip a token.
"""

from __future__ import annotations

import contextlib
import functools
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


@functools.lru_cache(maxsize=8)
def _trainer(folder: Path, dtype: Any, impl: str) -> Any:
    """The trainer's model of ``folder`` (loaded once per folder, dtype and attention; only read)."""
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


#: Independence case: copies of one prompt in one call, samples per copy, tokens per sample, and the
#: largest chance allowed for an independent engine to fail a check (the case refuses to judge above it).
COPIES = 16
SAMPLES = 8
SAMPLE_TOKENS = 8
MAX_FLAKE = 1e-9


def _two_token_collisions(model: Any, prompts: list[list[int]], top: int = 16) -> list[float]:
    """Per prompt (all of one length), an upper bound on the chance that two independent
    temperature-1 samples start with the same two tokens, from the float64 trainer:
    ``sum_a p(a)^2 * sum_b p(b|a)^2`` over the ``top`` likeliest first tokens ``a``, plus ``p(a)^2``
    for the others (their second-token term taken as 1). Two samples can be identical only if their
    first two tokens are, so this bounds that too."""
    import torch

    batch = torch.tensor(prompts)
    with torch.no_grad():
        first = torch.softmax(model(batch).logits[:, -1].double(), dim=-1)  # (prompts, vocab)
        p, a = first.topk(top, dim=-1)
        ids = torch.cat([batch.repeat_interleave(top, dim=0), a.reshape(-1, 1)], dim=1)
        second = torch.softmax(model(ids).logits[:, -1].double(), dim=-1).view(len(prompts), top, -1)
    rest = first.square().sum(-1) - p.square().sum(-1)
    return ((p.square() * second.square().sum(-1)).sum(-1) + rest).tolist()


def _spread_prompt(folder: Path) -> tuple[list[int], float]:
    """Among seeded random prompts, the one whose two-token collision chance is smallest."""
    import torch

    model = _trainer(folder, torch.float64, "eager")
    gen = torch.Generator().manual_seed(7)
    candidates = torch.randint(6, 102, (32, PROMPT_LEN), generator=gen).tolist()
    return min(zip(candidates, _two_token_collisions(model, candidates), strict=True), key=lambda pq: pq[1])


def _sample_groups(engine: Any, prompt: list[int], seed: int, offset: int = 0) -> list[list[tuple[int, ...]]]:
    from rlport.rollout.protocol import SamplingParams

    params = SamplingParams(
        n=SAMPLES, temperature=1.0, max_new_tokens=SAMPLE_TOKENS, seed=seed, prompt_offset=offset
    )
    return [[tuple(g.token_ids) for g in gens] for gens in engine.generate([prompt] * COPIES, params)]


@pytest.mark.rlport_case("rollout.independent_samples")
def test_independent_samples(case: CaseContext, rt: Any, models: Models) -> None:
    if not _ready(case, models):
        return
    assert models.folder_a is not None
    prompt, q = _spread_prompt(models.folder_a)
    # Union bounds on an independent engine failing: some copy's samples all alike, some two copies
    # alike sample for sample, or a whole call repeated under another seed or offset.
    bounds = {
        "collapsed_group": COPIES * q ** (SAMPLES - 1),
        "twin_copies": COPIES * (COPIES - 1) / 2 * q**SAMPLES,
        "repeated_call": q ** (COPIES * SAMPLES),
    }
    case.metric(two_token_collision=q, **{f"flake_bound_{k}": v for k, v in bounds.items()})
    if sum(bounds.values()) > MAX_FLAKE:
        case.record(
            Status.INTERNAL_ERROR,
            f"no prompt spread enough: two-token collision {q:.3g} gives a flake bound "
            f"{sum(bounds.values()):.3g} > {MAX_FLAKE:g}",
        )
        return
    engine = _engine(rt, models, case.facet["engine"])
    groups = _sample_groups(engine, prompt, seed=11)
    shapes = [[len(t) for t in g] for g in groups]
    if shapes != [[SAMPLE_TOKENS] * SAMPLES] * COPIES:
        case.fail(
            f"asked for {COPIES} prompts x {SAMPLES} samples x {SAMPLE_TOKENS} tokens, got lengths {shapes}"
        )
        return
    collapsed = [c for c, g in enumerate(groups) if len(set(g)) == 1]
    distinct = len({tuple(g) for g in groups})
    case.metric(distinct_groups=distinct, copies=COPIES)
    case.check(
        not collapsed,
        f"copies {collapsed} got {SAMPLES} identical samples each (chance if independent "
        f"<= {bounds['collapsed_group']:.2g})",
    )
    case.check(
        distinct == COPIES,
        f"{COPIES} copies of one prompt in one call gave only {distinct} distinct sample groups: "
        f"identical prompts are not sampled independently (chance if independent <= "
        f"{bounds['twin_copies']:.2g}); seed each sample, e.g. rlport.rollout.seeding.sample_seeds",
    )
    case.check(
        _sample_groups(engine, prompt, seed=11) == groups,
        "the same call with the same seed gave other samples (seeded sampling is not reproducible)",
    )
    case.check(
        _sample_groups(engine, prompt, seed=12) != groups,
        f"another seed repeated every sample (chance if independent <= {bounds['repeated_call']:.2g})",
    )
    case.check(
        _sample_groups(engine, prompt, seed=11, offset=COPIES) != groups,
        "another prompt_offset (the next worker's slice of a batch) repeated every sample "
        f"(chance if independent <= {bounds['repeated_call']:.2g})",
    )


#: ``rollout.sampling``: prompts x samples x tokens sampled with the case's filters.
FILTER_SAMPLES = 2
FILTER_TOKENS = 8


@pytest.mark.rlport_case("rollout.sampling")
def test_sampling(case: CaseContext, rt: Any, models: Models) -> None:
    """Sampling with temperature != 1, top_k and top_p: every sampled token is one the filters allow
    (in the raw top_k; inside the nucleus of the tempered distribution, with a margin for rounding),
    and the returned logprobs are the model's raw ones (log_softmax at temperature 1, unfiltered: what
    the trainer computes), the same rule as greedy agreement against a float64 trainer."""
    import torch

    from rlport.rollout.protocol import SamplingParams

    if not _ready(case, models):
        return
    assert models.folder_a is not None
    f = case.facet
    engine = _engine(rt, models, f["engine"])
    params = SamplingParams(
        n=FILTER_SAMPLES,
        temperature=f["temperature"],
        top_k=f["top_k"],
        top_p=f["top_p"],
        max_new_tokens=FILTER_TOKENS,
        seed=5,
    )
    groups = engine.generate(models.prompts, params)
    prompts = [p for p, gens in zip(models.prompts, groups, strict=True) for _ in gens]
    outputs = [g for gens in groups for g in gens]
    lengths = sorted({len(g.token_ids) for g in outputs})
    if len(outputs) != len(models.prompts) * FILTER_SAMPLES or lengths != [FILTER_TOKENS]:
        case.fail(
            f"asked for {len(models.prompts)} prompts x {FILTER_SAMPLES} samples x {FILTER_TOKENS} tokens, "
            f"got {len(outputs)} generations of lengths {lengths}"
        )
        return
    ref = _teacher_forced(models.folder_a, torch.float64, "eager", prompts, outputs)
    plain = _teacher_forced(models.folder_a, torch.float32, "eager", prompts, outputs)
    engine_err = plain_err = rounding = 0.0
    outside: list[str] = []
    for s, (gen, lp64, lp32) in enumerate(zip(outputs, ref, plain, strict=True)):
        for j, token in enumerate(gen.token_ids):
            raw = lp64[j]
            if f["top_k"] and float(raw[token]) < float(raw.topk(f["top_k"]).values[-1]) - 1e-6:
                outside.append(f"sample {s} step {j}: token {token} is not in the raw top-{f['top_k']}")
            if f["top_p"] < 1.0:
                probs = torch.softmax(raw / f["temperature"], dim=-1)
                before = float(probs[probs > probs[token] * (1 + 1e-6)].sum())
                if before >= f["top_p"] + 1e-4:
                    outside.append(
                        f"sample {s} step {j}: token {token} lies outside the top_p={f['top_p']} nucleus "
                        f"(mass before it {before:.4f})"
                    )
            engine_err = max(engine_err, abs(gen.logprobs[j] - float(raw[token])))
            plain_err = max(plain_err, abs(float(lp32[j, token]) - float(raw[token])))
            value = raw[token].clone()
            rounding = max(rounding, float((value.float().double() - value).abs()))
    case.metric(tokens=sum(len(g.token_ids) for g in outputs))
    case.check(not outside, "sampled tokens the filters exclude: " + "; ".join(outside[:5]))
    judgement = judge(engine_err, plain_err, rounding)
    if judgement.message:
        judgement = type(judgement)(
            judgement.status,
            judgement.metrics,
            "returned logprobs are not the model's raw logprobs (temperature 1, no top-k/top-p): "
            + judgement.message,
        )
    case.judge(judgement, prefix="logprob_")


# -- sampling as distributions, stop tokens and max_new_tokens -----------------------------------------

#: Samples of one next token per distribution case.
DIST_SAMPLES = 4000
#: A correct engine fails a distribution case in fewer than this fraction of seeds (union bound).
DIST_ALPHA = 1e-6
#: A filter boundary is put only on a token at least this likely (so dropping it is detectable).
DIST_MIN_BOUNDARY = 0.02


def exact_filtered(logits: Any, temperature: float, top_k: int, top_p: float) -> Any:
    """The float64 distribution sampling must follow: softmax of ``logits / temperature`` keeping
    the ``top_k`` likeliest tokens, then the nucleus (a token is kept while the mass strictly before
    it is below ``top_p``; the likeliest always stays), renormalised."""
    import torch

    z = logits.double() / temperature
    keep = torch.ones_like(z, dtype=torch.bool)
    if 0 < top_k < z.numel():
        keep &= z >= torch.topk(z, top_k).values[-1]
    probs = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, 0) - sorted_probs
        keep_sorted = before < top_p
        keep_sorted[0] = True
        keep = torch.zeros_like(keep).scatter(0, order, keep_sorted) & keep
        probs = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
    return probs


def choose_filters(logits: Any, temperature: float) -> tuple[int, float] | None:
    """A ``top_k`` whose last kept token and ``top_p`` whose crossing token are both at least
    :data:`DIST_MIN_BOUNDARY` likely, with clear gaps (no rounding can move a boundary), or None."""
    import torch

    probs = torch.sort(torch.softmax(logits.double() / temperature, dim=-1), descending=True).values
    cum = torch.cumsum(probs, 0)
    top_k = next(
        (
            k
            for k in range(2, len(probs))
            if cum[k - 1] >= 0.6 and probs[k - 1] >= DIST_MIN_BOUNDARY and probs[k - 1] >= 1.05 * probs[k]
        ),
        None,
    )
    j = next((j for j in range(1, len(probs)) if cum[j - 1] >= 0.4 and probs[j] >= DIST_MIN_BOUNDARY), None)
    if top_k is None or j is None:
        return None
    return top_k, float(cum[j - 1] + cum[j]) / 2


def count_bounds(probs: Any, samples: int, alpha: float) -> Any:
    """Per token, the largest ``|count - samples * p|`` a correct sampler exceeds with probability at
    most ``alpha / vocab`` (Bernstein's inequality, two-sided), so all tokens together at most alpha."""
    import math

    var = samples * probs * (1 - probs)
    log_term = math.log(2 * probs.numel() / alpha)
    return log_term / 3 + (log_term**2 / 9 + 2 * var * log_term).sqrt()


@pytest.mark.rlport_case("rollout.distribution")
def test_distribution(case: CaseContext, rt: Any, models: Models) -> None:
    """The empirical distribution of one sampled token (:data:`DIST_SAMPLES` samples) against the
    exact filtered distribution from the float64 trainer: a token the filters exclude is never
    sampled, and every token's count lies within Bernstein's bound at DIST_ALPHA (union over the
    vocabulary). The filters' boundaries are chosen from the model on likely tokens, so a nucleus or
    top-k one token too small fails."""
    import torch

    from rlport.rollout.protocol import SamplingParams

    if not _ready(case, models):
        return
    assert models.folder_a is not None
    f = case.facet
    trainer = _trainer(models.folder_a, torch.float64, "eager")
    with torch.no_grad():
        logits = {tuple(p): trainer(torch.tensor([p])).logits[0, -1].double() for p in models.prompts}
    # the prompt whose next token is least certain
    prompt = max(models.prompts, key=lambda p: -float((torch.softmax(logits[tuple(p)], -1) ** 2).sum()))
    z = logits[tuple(prompt)]
    temperature = f["temperature"]
    chosen = choose_filters(z, temperature) if f["filters"] != "temperature" else (0, 1.0)
    if chosen is None:
        case.record(
            Status.INTERNAL_ERROR, "the tiny model's next-token distribution is too peaked to test filters"
        )
        return
    top_k = chosen[0] if f["filters"] in ("top_k", "combined") else 0
    top_p = chosen[1] if f["filters"] in ("top_p", "combined") else 1.0
    if f["filters"] == "combined":  # the nucleus inside the top-k, its own boundary on a likely token
        inner = exact_filtered(z, temperature, top_k, 1.0)
        again = choose_filters(inner.clamp_min(1e-300).log(), 1.0)
        top_p = again[1] if again else 1.0
    exact = exact_filtered(z, temperature, top_k, top_p)
    case.metric(temperature=temperature, top_k=top_k, top_p=top_p, samples=DIST_SAMPLES, alpha=DIST_ALPHA)
    engine = _engine(rt, models, f["engine"])
    params = SamplingParams(
        n=DIST_SAMPLES, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=1, seed=77
    )
    gens = engine.generate([prompt], params)[0]
    tokens = [g.token_ids[0] for g in gens if g.token_ids]
    if len(tokens) != DIST_SAMPLES:
        case.fail(f"asked for {DIST_SAMPLES} one-token samples, got {len(tokens)}")
        return
    counts = torch.bincount(torch.tensor(tokens), minlength=exact.numel()).double()[: exact.numel()]
    expected = exact * DIST_SAMPLES
    excluded = [int(i) for i in torch.nonzero((exact == 0) & (counts > 0)).flatten()]
    case.check(
        not excluded,
        f"sampled {len(excluded)} tokens the filters exclude (temperature {temperature}, top_k {top_k}, "
        f"top_p {top_p:.4f}): {excluded[:5]}",
    )
    excess = (counts - expected).abs() - count_bounds(exact, DIST_SAMPLES, DIST_ALPHA)
    worst = int(torch.argmax(excess))
    case.metric(worst_token=worst, worst_count=float(counts[worst]), worst_expected=float(expected[worst]))
    case.check(
        float(excess[worst]) <= 0,
        f"token {worst} was sampled {int(counts[worst])} times in {DIST_SAMPLES}, the exact filtered "
        f"distribution expects {float(expected[worst]):.1f} (a correct engine strays this far less than "
        f"once in {1 / DIST_ALPHA:.0e} runs; temperature {temperature}, top_k {top_k}, top_p {top_p:.4f})",
    )


@pytest.mark.rlport_case("rollout.stop_tokens")
def test_stop_tokens(case: CaseContext, rt: Any, models: Models) -> None:
    """``stop_token_ids`` end a generation after the first stop token (kept, ``finish_reason
    "stop"``), greedy at the step greedy decoding reaches it and sampled wherever one is drawn;
    without a stop ``max_new_tokens`` tokens come back, ``finish_reason "length"``."""
    from rlport.rollout.protocol import SamplingParams

    if not _ready(case, models):
        return
    engine = _engine(rt, models, case.facet["engine"])
    free = _greedy(engine, models.prompts, NEW_TOKENS)
    problems = []
    for i, gen in enumerate(free):
        if len(gen.token_ids) != NEW_TOKENS or gen.finish_reason != "length":
            problems.append(f"prompt {i} without stops: {len(gen.token_ids)} tokens ({gen.finish_reason})")
    # Greedy: stop at the token greedy reaches at step 3 (its first occurrence).
    for i, gen in enumerate(free):
        stop = gen.token_ids[3]
        at = gen.token_ids.index(stop)
        params = SamplingParams(
            n=1, temperature=0.0, max_new_tokens=NEW_TOKENS, stop_token_ids=(stop, 100000), seed=0
        )
        got = engine.generate([models.prompts[i]], params)[0][0]
        if got.token_ids != gen.token_ids[: at + 1] or got.finish_reason != "stop":
            problems.append(
                f"prompt {i} greedy with stop {stop}: expected {gen.token_ids[: at + 1]} (stop), got "
                f"{got.token_ids} ({got.finish_reason})"
            )
    # Sampled: frequent stop tokens; each generation ends at its first stop token or at the length.
    stops = tuple(sorted({g.token_ids[j] for g in free for j in (0, 1)}))
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=7, stop_token_ids=stops, seed=3)
    stopped = 0
    for gens in engine.generate(models.prompts, params):
        for g in gens:
            first = next((j for j, t in enumerate(g.token_ids) if t in stops), None)
            if first is not None:
                stopped += 1
                if len(g.token_ids) != first + 1 or g.finish_reason != "stop":
                    problems.append(f"sampled {g.token_ids}: a stop token at {first} but {g.finish_reason}")
            elif len(g.token_ids) != 7 or g.finish_reason != "length":
                problems.append(
                    f"sampled {g.token_ids}: no stop token, {len(g.token_ids)} tokens ({g.finish_reason})"
                )
    case.metric(sampled_stopped=stopped)
    case.check(not problems, "; ".join(problems[:4]))
