"""The ``sglang`` engine adapter against a fake ``sglang`` module.

SGLang cannot be installed beside torch 2.13 here, so the test installs a fake ``sglang`` into
``sys.modules``: its ``Engine`` accepts only SGLang's argument names and types, checks every call's
arguments (token ids, sampling-parameter keys, tensor names/shapes, memory tags), records them, and
computes with torch on a real tiny model, reporting logprobs as SGLang does: after temperature
unless ``SGLANG_RETURN_ORIGINAL_LOGPROB`` is true, and trimming a matched stop token from the output
unless ``no_stop_trim`` is set. Nothing here has run against SGLang itself.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import rlport
from rlport.errors import EngineError
from rlport.rollout import EngineConfig, RolloutEngine, SamplingParams
from rlport.rollout.process_receiver import digests
from rlport.rollout.sglang_engine import RAW_LOGPROBS_ENV, SGLangEngine
from rlport.rollout.tiny import build_tiny_model
from rlport.rollout.transport import InProcessTransport
from rlport.types import EnginePlacement

SERVER_ARGS: dict[str, type | tuple[type, ...]] = {
    "model_path": str,
    "dtype": str,
    "random_seed": int,
    "context_length": int,
    "trust_remote_code": bool,
    "skip_tokenizer_init": bool,
    "device": str,
    "base_gpu_id": int,
    "enable_memory_saver": bool,
    "enable_deterministic_inference": bool,
    "mem_fraction_static": float,
}
SAMPLING: dict[str, type | tuple[type, ...]] = {
    "n": int,
    "max_new_tokens": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": int,
    "stop_token_ids": list,
    "ignore_eos": bool,
    "no_stop_trim": bool,
    "sampling_seed": int,
}
TAGS = ("weights", "kv_cache", "cuda_graph")


def _typed(what: str, values: dict[str, Any], spec: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise TypeError(f"{what}: unexpected argument(s) {unknown}")
    for key, value in values.items():
        if not isinstance(value, spec[key]) or (spec[key] is int and isinstance(value, bool)):
            raise TypeError(f"{what}: {key}={value!r} is not {spec[key]}")


class FakeEngine:
    """``sglang.Engine`` as far as the adapter uses it (see the module docstring)."""

    instances: ClassVar[list[FakeEngine]] = []

    def __init__(self, **kwargs: Any) -> None:
        from transformers import AutoModelForCausalLM

        _typed("ServerArgs", kwargs, SERVER_ARGS)
        assert kwargs["skip_tokenizer_init"] is True
        self.kwargs = kwargs
        self.raw = os.environ.get(RAW_LOGPROBS_ENV, "").lower() in ("1", "true")
        self.model = AutoModelForCausalLM.from_pretrained(kwargs["model_path"], dtype=torch.float32).eval()
        self.calls: list[tuple[str, Any]] = []
        self.released: set[str] = set()
        self.closed = False
        FakeEngine.instances.append(self)

    def generate(
        self,
        prompt: Any = None,
        sampling_params: Any = None,
        input_ids: Any = None,
        return_logprob: bool = False,
        top_logprobs_num: int | None = None,
    ) -> list[dict[str, Any]]:
        assert prompt is None and return_logprob is True and not self.closed
        assert isinstance(input_ids, list) and all(
            isinstance(ids, list) and ids and all(type(t) is int for t in ids) for ids in input_ids
        )
        assert isinstance(sampling_params, list) and len(sampling_params) == len(input_ids)
        for sp in sampling_params:
            _typed("SamplingParams", sp, SAMPLING)
            assert sp["n"] == 1
        assert top_logprobs_num is None or (type(top_logprobs_num) is int and top_logprobs_num > 0)
        if self.released & {"weights", "kv_cache"}:
            raise RuntimeError(f"generate with {sorted(self.released)} released")
        self.calls.append(("generate", [dict(sp) for sp in sampling_params]))
        return [
            self._one(ids, sp, top_logprobs_num or 0)
            for ids, sp in zip(input_ids, sampling_params, strict=True)
        ]

    @torch.no_grad()
    def _one(self, ids: list[int], sp: dict[str, Any], k: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(sp.get("sampling_seed", int(torch.randint(1 << 30, ()))))
        temperature, top_k = float(sp["temperature"]), sp["top_k"]
        if temperature < 1e-6:  # SGLang: greedy is top_k=1
            temperature, top_k = 1.0, 1
        seq, out, steps, tops = list(ids), [], [], []
        reason: dict[str, Any] = {"type": "length", "length": sp["max_new_tokens"]}
        for _ in range(sp["max_new_tokens"]):
            logits = self.model(torch.tensor([seq])).logits[0, -1].float()
            shown = torch.log_softmax(logits if self.raw else logits / temperature, -1)
            scaled = logits / temperature
            if top_k != -1:
                scaled = scaled.masked_fill(scaled < torch.topk(scaled, top_k).values[-1], float("-inf"))
            token = int(torch.multinomial(torch.softmax(scaled, -1), 1, generator=gen))
            out.append(token)
            steps.append((float(shown[token]), token, None))
            if k:
                top = torch.topk(shown, k)
                tops.append([(float(v), int(i), None) for v, i in zip(top.values, top.indices, strict=True)])
            seq.append(token)
            if token in sp["stop_token_ids"]:
                reason = {"type": "stop", "matched": token}
                break
        if reason["type"] == "stop" and not sp.get("no_stop_trim"):
            out = out[:-1]  # SGLang trims the matched stop token unless no_stop_trim
        meta = {"output_token_logprobs": steps, "output_top_logprobs": tops or None, "finish_reason": reason}
        return {"output_ids": out, "meta_info": meta}

    def update_weights_from_tensor(
        self, named_tensors: Any, load_format: str | None = None, flush_cache: bool = True
    ) -> None:
        assert isinstance(named_tensors, list) and load_format is None and flush_cache is True
        state = self.model.state_dict()
        for name, tensor in named_tensors:
            assert isinstance(name, str) and isinstance(tensor, torch.Tensor) and not tensor.requires_grad
            assert tuple(tensor.shape) == tuple(state[name].shape), name
        if "weights" in self.released:
            raise RuntimeError("update_weights_from_tensor with weights released")
        with torch.no_grad():
            for name, tensor in named_tensors:
                state[name].copy_(tensor)
        self.calls.append(("update_weights_from_tensor", [n for n, _ in named_tensors]))

    def _tags(self, what: str, tags: Any) -> None:
        if not self.kwargs.get("enable_memory_saver"):
            raise RuntimeError(f"{what} needs enable_memory_saver")
        assert isinstance(tags, list) and tags and all(t in TAGS for t in tags), tags
        self.calls.append((what, list(tags)))

    def release_memory_occupation(self, tags: list[str] | None = None) -> None:
        self._tags("release_memory_occupation", tags)
        assert not self.released & set(tags or ()), "released twice"
        self.released |= set(tags or ())

    def resume_memory_occupation(self, tags: list[str] | None = None) -> None:
        self._tags("resume_memory_occupation", tags)
        assert set(tags or ()) <= self.released, "resumed what was not released"
        self.released -= set(tags or ())

    def shutdown(self) -> None:
        self.closed = True
        self.calls.append(("shutdown", None))


@pytest.fixture
def fake_sglang(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeEngine]]:
    module = types.ModuleType("sglang")
    module.Engine = FakeEngine  # type: ignore[attr-defined]
    module.__spec__ = importlib.machinery.ModuleSpec("sglang", None, origin="fake sglang (rlport tests)")
    monkeypatch.setitem(sys.modules, "sglang", module)
    monkeypatch.delenv(RAW_LOGPROBS_ENV, raising=False)
    FakeEngine.instances = []
    yield FakeEngine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "m", vocab=None, hidden_size=64, heads=2, kv_heads=1, seed=2,
        initializer_range=0.2,
    )  # fmt: skip


def make(model_dir: Path, **options: Any) -> SGLangEngine:
    return rlport.init().make_engine("sglang", EngineConfig(model=str(model_dir), seed=7, options=options))


def test_offered_by_the_reference_and_needs_sglang(model_dir: Path) -> None:
    rt = rlport.init()
    offer, plugin = rt.rollout_engines()["sglang"]
    assert plugin == "reference" and offer.requires == ("sglang",)
    with pytest.raises(EngineError, match=r"rlport\[sglang\]"):
        rt.make_engine("sglang", EngineConfig(model=str(model_dir)))


def test_engine_arguments_map_the_config(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    engine = make(model_dir, mem_fraction_static=0.5)
    assert isinstance(engine, RolloutEngine)
    assert fake_sglang.instances[0].kwargs == {
        "model_path": str(model_dir),
        "dtype": "float32",
        "random_seed": 7,
        "context_length": 512,
        "trust_remote_code": False,
        "device": "cpu",
        "mem_fraction_static": 0.5,
        "skip_tokenizer_init": True,
    }
    assert os.environ[RAW_LOGPROBS_ENV] == "true" and fake_sglang.instances[0].raw
    assert engine.capabilities["weights_process"] == "engine" and engine.capabilities["sleep_tags"] == ()


def test_device_index_and_refusals(fake_sglang: type[FakeEngine], model_dir: Path, monkeypatch) -> None:
    SGLangEngine(EngineConfig(model=str(model_dir), device="cpu:3"))
    assert fake_sglang.instances[-1].kwargs["base_gpu_id"] == 3
    with pytest.raises(EngineError, match=r"\['skip_tokenizer_init'\] are set by the engine"):
        make(model_dir, skip_tokenizer_init=False)
    with pytest.raises(EngineError, match=r"Engine\(.*no_such_arg=1.*TypeError"):
        make(model_dir, no_such_arg=1)
    monkeypatch.setenv(RAW_LOGPROBS_ENV, "false")
    with pytest.raises(EngineError, match=f"unset {RAW_LOGPROBS_ENV}"):
        make(model_dir)


def test_greedy_matches_the_hf_engine(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    prompts = [[1, 5, 9], [1, 40, 41, 42, 43]]
    params = SamplingParams(temperature=0, max_new_tokens=6)
    hf = rlport.init().make_engine("hf", EngineConfig(model=str(model_dir)))
    want = hf.generate(prompts, params)
    got = make(model_dir).generate(prompts, params)
    for w, g in zip(want, got, strict=True):
        assert g[0].token_ids == w[0].token_ids and g[0].prompt_index == w[0].prompt_index
        assert g[0].logprobs == pytest.approx(w[0].logprobs, abs=1e-4)
    sent = fake_sglang.instances[0].calls[0][1][0]
    assert (sent["temperature"], sent["top_k"], sent["ignore_eos"], sent["no_stop_trim"]) == (
        0,
        -1,
        True,
        True,
    )
    assert "sampling_seed" not in sent


def test_sampled_logprobs_are_raw(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    trainer = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = [1, 7, 8]
    (gens,) = make(model_dir).generate(
        [prompt], SamplingParams(n=3, temperature=0.6, max_new_tokens=5, seed=1)
    )
    for g in gens:
        with torch.no_grad():
            logits = trainer(torch.tensor([prompt + g.token_ids])).logits[0].float()
        raw = torch.log_softmax(logits[len(prompt) - 1 : -1], -1)
        expect = raw[torch.arange(len(g.token_ids)), torch.tensor(g.token_ids)]
        assert g.logprobs == pytest.approx(expect.tolist(), abs=1e-4)


def test_one_seed_per_sample_and_reproducible(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    engine = make(model_dir)
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=6, seed=11)
    first = engine.generate([[1, 2], [1, 3]], params)
    again = engine.generate([[1, 2], [1, 3]], params)
    assert [[g.token_ids for g in gs] for gs in first] == [[g.token_ids for g in gs] for gs in again]
    assert [len(gs) for gs in first] == [4, 4] and {g.prompt_index for g in first[1]} == {1}
    seeds = [sp["sampling_seed"] for sp in fake_sglang.instances[0].calls[0][1]]
    assert len(set(seeds)) == 8
    other = [sp["sampling_seed"] for sp in engine.engine.calls[-1][1]]
    engine.generate([[1, 2], [1, 3]], SamplingParams(n=4, max_new_tokens=2, seed=12))
    assert seeds == other and [sp["sampling_seed"] for sp in engine.engine.calls[-1][1]] != seeds


def test_stop_token_kept_and_top_logprobs(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    engine = make(model_dir)
    (greedy,) = engine.generate([[1, 9]], SamplingParams(temperature=0, max_new_tokens=6))
    stop = greedy[0].token_ids[2]
    (gens,) = engine.generate(
        [[1, 9]], SamplingParams(temperature=0, max_new_tokens=6, stop_token_ids=(stop,), logprobs_top_k=3)
    )
    g = gens[0]
    cut = greedy[0].token_ids.index(stop) + 1
    assert g.token_ids == greedy[0].token_ids[:cut] and g.finish_reason == "stop"
    assert g.top_logprobs is not None and len(g.top_logprobs) == cut
    assert all(len(t) == 3 for t in g.top_logprobs) and g.top_logprobs[0][g.token_ids[0]] == pytest.approx(
        g.logprobs[0]
    )
    assert greedy[0].finish_reason == "length"


def test_update_weights_in_buckets_through_the_resolved_transport(
    fake_sglang: type[FakeEngine], model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    engine = make(model_dir)
    trainer = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for p in trainer.parameters():
            p.mul_(-1.0)
    placement = EnginePlacement(same_process=engine.capabilities["weights_process"] != "worker")
    transport = rlport.current().weight_transport("sglang", placement)
    assert isinstance(transport, InProcessTransport)
    InProcessTransport(bucket_bytes=64 << 10).send(
        engine, ((n, p.detach()) for n, p in trainer.named_parameters())
    )
    fake = fake_sglang.instances[0]
    assert digests(fake.model.named_parameters()) == digests(trainer.named_parameters())
    assert len([c for c in fake.calls if c[0] == "update_weights_from_tensor"]) > 2
    with pytest.raises(EngineError, match=r"model\.norm\.weight: \(3,\)"):
        engine.update_weights([("model.norm.weight", torch.zeros(3))])
    with pytest.raises(EngineError, match=r"bogus"):
        engine.update_weights([("model.bogus.weight", torch.zeros(3))])


def test_sleep_and_wake_by_tag(fake_sglang: type[FakeEngine], model_dir: Path) -> None:
    engine = make(model_dir, enable_memory_saver=True)
    fake = fake_sglang.instances[0]
    assert engine.capabilities["sleep_tags"] == ("weights", "kv_cache", "cuda_graph")
    engine.sleep(("kv_cache", "cuda_graph"))
    with pytest.raises(EngineError, match="asleep"):
        engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
    weights = [(n, p.detach().clone()) for n, p in fake.model.named_parameters()]
    engine.update_weights(weights)  # allowed while only the KV cache and graphs sleep
    engine.sleep(("weights",))
    with pytest.raises(EngineError, match=r"update_weights\(\) while \['weights'\] asleep"):
        engine.update_weights(weights)
    engine.wake_up(("weights", "kv_cache", "cuda_graph"))
    engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
    assert [c for c in fake.calls if "memory" in c[0]] == [
        ("release_memory_occupation", ["kv_cache", "cuda_graph"]),
        ("release_memory_occupation", ["weights"]),
        ("resume_memory_occupation", ["weights", "kv_cache", "cuda_graph"]),
    ]
    with pytest.raises(EngineError, match=r"cannot sleep tag"):
        engine.sleep(("optimizer",))


def test_sleep_refused_without_memory_saver_and_shutdown(
    fake_sglang: type[FakeEngine], model_dir: Path
) -> None:
    engine = make(model_dir)
    with pytest.raises(EngineError, match="enable_memory_saver=True"):
        engine.sleep(("weights",))
    engine.shutdown()
    engine.shutdown()
    assert fake_sglang.instances[0].calls[-1] == ("shutdown", None)
    with pytest.raises(EngineError, match="after shutdown"):
        engine.generate([[1, 2]], SamplingParams(max_new_tokens=2))
