"""The Hugging Face rollout engine against a trainer-style teacher-forced forward pass on a tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlport.errors import EngineError
from rlport.rollout import EngineConfig, Generation, RolloutEngine, SamplingParams
from rlport.rollout.hf_engine import HFEngine, _filter_logits, create
from rlport.rollout.tiny import build_tiny_model

PROMPTS = [[1, 49, 20, 27, 30], [1, 5, 6], [1, 70, 71, 72, 73, 74, 75]]  # different lengths: left padding


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "model", vocab=None, initializer_range=0.2, seed=1
    )


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[HFEngine]:
    eng = create(EngineConfig(model=str(model_dir)))
    yield eng
    eng.shutdown()


def trainer(model_dir: Path) -> torch.nn.Module:
    """The trainer's view: a separately loaded model with transformers' own eager attention."""
    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()


def teacher_forced(
    model: torch.nn.Module, prompt: list[int], tokens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logprobs of ``tokens``, log_softmax rows) from one unpadded forward pass, as a trainer computes them."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0, len(prompt) - 1 : -1]
    return logp.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1), logp


def greedy(eng: RolloutEngine, n_tokens: int = 10) -> list[Generation]:
    return [g[0] for g in eng.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=n_tokens))]


def test_engine_satisfies_protocol(engine: HFEngine) -> None:
    assert isinstance(engine, RolloutEngine)
    assert engine.name == "hf"
    assert engine.capabilities["update_weights"] is True
    assert engine.capabilities["sleep_tags"] == ("weights", "kv_cache")
    assert engine.capabilities["attn_implementation"] == "rlport"


def test_greedy_equals_trainer_argmax_and_logprobs(engine: HFEngine, model_dir: Path) -> None:
    ref = trainer(model_dir)
    gens = greedy(engine)
    assert [g.prompt_index for g in gens] == [0, 1, 2]
    for prompt, gen in zip(PROMPTS, gens, strict=True):
        assert len(gen.token_ids) == len(gen.logprobs) == 10
        assert gen.finish_reason == "length"
        expected, logp = teacher_forced(ref, prompt, gen.token_ids)
        assert logp.argmax(-1).tolist() == gen.token_ids
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)


def test_sampled_logprobs_are_raw_and_respect_top_k(engine: HFEngine, model_dir: Path) -> None:
    """At temperature 0.7 with top-k 5, logprobs stay the trainer's temperature-1 log-softmax."""
    ref = trainer(model_dir)
    params = SamplingParams(n=2, temperature=0.7, top_k=5, max_new_tokens=8, seed=11)
    for prompt, gens in zip(PROMPTS, engine.generate(PROMPTS, params), strict=True):
        for gen in gens:
            expected, logp = teacher_forced(ref, prompt, gen.token_ids)
            torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)
            top5 = logp.topk(5, dim=-1).indices
            assert all(t in row for t, row in zip(gen.token_ids, top5.tolist(), strict=True))


def test_seeded_sampling_is_reproducible(engine: HFEngine) -> None:
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=8, seed=123)

    def ids(p: SamplingParams) -> list[list[list[int]]]:
        return [[g.token_ids for g in gens] for gens in engine.generate(PROMPTS, p)]

    first = ids(params)
    assert ids(params) == first
    other = ids(SamplingParams(n=4, temperature=1.0, max_new_tokens=8, seed=124))
    assert other != first
    flat = [tuple(t) for gens in first for t in gens]
    assert len(set(flat)) > 1  # the n samples of a prompt are not copies of one another


def test_n_samples_shapes_and_indices(engine: HFEngine) -> None:
    out = engine.generate(PROMPTS[:2], SamplingParams(n=3, temperature=1.0, max_new_tokens=5, seed=0))
    assert len(out) == 2
    for index, gens in enumerate(out):
        assert len(gens) == 3
        for gen in gens:
            assert gen.prompt_index == index
            assert len(gen.token_ids) == len(gen.logprobs) == 5
            assert all(lp <= 0.0 for lp in gen.logprobs)
            assert gen.top_logprobs is None


def test_stop_token_ids_end_generation(engine: HFEngine) -> None:
    base = greedy(engine)
    stop = base[0].token_ids[3]
    cut = base[0].token_ids.index(stop) + 1
    params = SamplingParams(temperature=0, max_new_tokens=10, stop_token_ids=(stop,))
    stopped = [g[0] for g in engine.generate(PROMPTS, params)]
    assert stopped[0].token_ids == base[0].token_ids[:cut]
    assert stopped[0].token_ids[-1] == stop
    assert stopped[0].finish_reason == "stop"
    assert len(stopped[0].logprobs) == cut
    for before, after in zip(base[1:], stopped[1:], strict=True):
        if stop in before.token_ids:
            assert after.token_ids == before.token_ids[: before.token_ids.index(stop) + 1]
            assert after.finish_reason == "stop"
        else:
            assert after.token_ids == before.token_ids
            assert after.finish_reason == "length"


def test_top_logprobs(engine: HFEngine) -> None:
    gen = engine.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=4, logprobs_top_k=3))[0][
        0
    ]
    assert gen.top_logprobs is not None and len(gen.top_logprobs) == 4
    for token, logprob, top in zip(gen.token_ids, gen.logprobs, gen.top_logprobs, strict=True):
        assert len(top) == 3
        assert max(top, key=top.__getitem__) == token
        assert top[token] == pytest.approx(logprob, abs=1e-6)


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept_p = torch.isfinite(_filter_logits(logits, SamplingParams(top_p=0.6)))
    assert kept_p.tolist() == [[True, True, False, False]]
    kept_k = torch.isfinite(_filter_logits(logits, SamplingParams(top_k=3)))
    assert kept_k.tolist() == [[True, True, True, False]]
    kept_tiny_p = torch.isfinite(_filter_logits(logits, SamplingParams(top_p=0.1)))
    assert kept_tiny_p.tolist() == [[True, False, False, False]]


def test_update_weights_serves_the_new_weights(model_dir: Path) -> None:
    eng = create(EngineConfig(model=str(model_dir)))
    before = greedy(eng)
    ref = trainer(model_dir)
    generator = torch.Generator().manual_seed(7)
    new = {k: v + 0.2 * torch.randn(v.shape, generator=generator) for k, v in ref.state_dict().items()}
    eng.update_weights(new.items())
    ref.load_state_dict(new)
    after = greedy(eng)
    assert [g.token_ids for g in after] != [g.token_ids for g in before]
    for prompt, gen in zip(PROMPTS, after, strict=True):
        expected, logp = teacher_forced(ref, prompt, gen.token_ids)
        assert logp.argmax(-1).tolist() == gen.token_ids
        torch.testing.assert_close(torch.tensor(gen.logprobs), expected, atol=1e-4, rtol=0)
    eng.shutdown()


def test_update_weights_refuses_unknown_name_and_wrong_shape(model_dir: Path) -> None:
    eng = create(EngineConfig(model=str(model_dir)))
    before = greedy(eng, 4)
    norm = torch.zeros(eng.model.config.hidden_size)
    with pytest.raises(EngineError, match=r"model\.layers\.9\.bogus\.weight"):
        eng.update_weights([("model.norm.weight", norm), ("model.layers.9.bogus.weight", norm)])
    with pytest.raises(EngineError, match=r"model\.norm\.weight: \(3,\)"):
        eng.update_weights([("model.norm.weight", torch.zeros(3))])
    assert [g.token_ids for g in greedy(eng, 4)] == [g.token_ids for g in before]  # nothing was written
    eng.shutdown()


def test_sleep_wake_round_trip_is_exact(model_dir: Path) -> None:
    eng = create(EngineConfig(model=str(model_dir)))
    before = greedy(eng)
    weight = eng.model.model.embed_tokens.weight
    eng.sleep(("weights", "kv_cache"))
    assert weight.untyped_storage().nbytes() == 0  # released, not just flagged
    with pytest.raises(EngineError, match="asleep"):
        eng.generate(PROMPTS, SamplingParams(temperature=0))
    with pytest.raises(EngineError, match="asleep"):
        eng.update_weights([])
    eng.wake_up(("weights", "kv_cache"))
    assert weight.untyped_storage().nbytes() > 0
    after = greedy(eng)
    assert [g.token_ids for g in after] == [g.token_ids for g in before]
    assert [g.logprobs for g in after] == [g.logprobs for g in before]
    with pytest.raises(EngineError, match="unknown sleep tag"):
        eng.sleep(("activations",))
    eng.shutdown()
    with pytest.raises(EngineError, match="after shutdown"):
        eng.generate(PROMPTS, SamplingParams())


def test_invalid_requests_are_refused(engine: HFEngine) -> None:
    with pytest.raises(EngineError, match="max_model_len=512"):
        engine.generate([[1] * 510], SamplingParams(max_new_tokens=8))
    with pytest.raises(EngineError, match="prompt 1 is empty"):
        engine.generate([[1], []], SamplingParams())
    with pytest.raises(EngineError, match=r"temperature=-1"):
        engine.generate([[1]], SamplingParams(temperature=-1))


def test_made_through_the_runtime(model_dir: Path) -> None:
    import rlport

    eng = rlport.current().make_engine("hf", EngineConfig(model=str(model_dir)))
    assert isinstance(eng, HFEngine)
    assert len(greedy(eng, 2)[0].token_ids) == 2
    eng.shutdown()
