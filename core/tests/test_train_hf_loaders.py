"""The model folders rlport writes load the same way in every Hugging Face tool.

The demo's model folder, a trained checkpoint and a LoRA run's merged checkpoint, loaded through
``AutoTokenizer``, ``AutoModelForCausalLM`` and a ``transformers`` text-generation pipeline, give
exactly the token ids and logits rlport's own loading gives (rlport trains on those ids, and vLLM,
TRL or a user's evaluation script reads the folder through the Auto classes). A folder written
with a generic tokenizer class, which transformers 5 loads as the model type's own class with other
ids, is named in a warning.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from rlport.train.cli import build_config
from rlport.train.driver.trainer import Trainer
from rlport.train.loading import load_causal_lm, load_tokenizer

TEXTS = ["repeat the letter c", "a b\nc  d", "12 + 3.5 = ?"]


def _fit(out: Path, *extra: str) -> Path:
    cfg = build_config(
        [
            "trainer.progress=false",
            "trainer.steps=2",
            "data.train_batch_size=4",
            "rollout.n=2",
            "rollout.max_new_tokens=4",
            f"trainer.output_dir={out}",
            *extra,
        ],
        demo=True,
    )
    return Trainer(cfg, console=Console(file=io.StringIO())).fit().checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("loaders")
    found = {"demo model": out / "full" / "model", "checkpoint": _fit(out / "full")}
    pytest.importorskip("peft")
    found["lora checkpoint"] = _fit(out / "lora", "model.lora_rank=4")
    return found


@pytest.mark.parametrize("which", ["demo model", "checkpoint", "lora checkpoint"])
def test_auto_classes_and_a_pipeline_see_rlports_ids_and_logits(which: str, folders: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    path = folders[which]
    ours = load_tokenizer(path)
    auto = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": TEXTS[0]}]
    chats = [ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    assert chats == [auto.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    for text in [*TEXTS, *chats]:
        assert auto(text).input_ids == ours(text).input_ids, (which, text)
        assert auto.decode(auto(text).input_ids) == text  # spaces and newlines survive

    ids = torch.tensor([ours(chats[0]).input_ids])
    model = load_causal_lm(path, dtype="float32", attn_implementation="eager", device="cpu")
    theirs = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.equal(theirs(input_ids=ids).logits, expected)

    pipe = pipeline("text-generation", model=str(path), device="cpu")
    assert pipe.tokenizer(chats[0]).input_ids == ids[0].tolist()
    generated = pipe(chats[0], max_new_tokens=4, do_sample=False, return_full_text=False)[0]["generated_text"]
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :]
    assert generated == ours.decode(greedy, skip_special_tokens=True)


def test_a_generic_tokenizer_that_auto_loads_differently_is_named(tmp_path: Path) -> None:
    """A qwen2 folder whose tokenizer_config.json declares the generic class (as rlport's demo
    folders did before): rlport keeps that tokenizer and warns that AutoTokenizer's ids differ."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from rlport.rollout.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "m", vocab=None)
    table = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", *" abcdefghijklmnopqrstuvwxyz"])}
    generic = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab=table, merges=[], unk_token=None)),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
    )
    generic.save_pretrained(folder)
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] in (
        "PreTrainedTokenizerFast",
        "TokenizersBackend",
    )
    with pytest.warns(UserWarning, match="AutoTokenizer loads it as Qwen2Tokenizer and gives other ids"):
        tok = load_tokenizer(folder)
    assert tok("a b").input_ids == [table["a"], table[" "], table["b"]]
