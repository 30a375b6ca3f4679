"""Build a tiny, real Qwen2 causal LM and its tokenizer offline, in milliseconds.

Used by tests, benchmarks and ``rlport train --demo``: no model hub is needed. The tokenizer is
trained in-process with the ``tokenizers`` library (or is a fixed character-level vocabulary) and
built as transformers' ``Qwen2Tokenizer`` (byte-level BPE), the class ``AutoTokenizer`` gives a
qwen2 folder: reload it with ``AutoTokenizer.from_pretrained(path)``, and vLLM's tokenizer reads the
same ids. The model folder loads with ``AutoModelForCausalLM.from_pretrained(path)`` and in vLLM
(head size is at least 32).

Stable API (other modules call it)::

    build_tiny_model(path, *, vocab, hidden_size=128, heads=4, kv_heads=2, layers=2, seed=0) -> path

Special tokens: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, then ``<|system|>``, ``<|user|>``,
``<|assistant|>`` (used by the chat template).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

from rlport.errors import ConfigError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)
CHAR_ALPHABET = tuple(string.printable[:95] + "\n")  # digits, letters, punctuation, space, newline

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<eos>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _byte_level(text: str) -> str:
    """``text`` in the byte-level alphabet Qwen2's tokenizer matches vocabulary entries in (a space
    is ``Ġ``, a newline ``Ċ``): the vocabulary is written in it so that every loader agrees."""
    from tokenizers import pre_tokenizers

    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
    return "".join(piece for piece, _ in pieces)


def _qwen2_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]):  # -> Qwen2Tokenizer
    """transformers' own Qwen2 tokenizer class over ``vocab`` and ``merges``.

    A qwen2 model folder loads with that class whatever its ``tokenizer_config.json`` declares
    (``AutoTokenizer`` in transformers 5 overrides a generic class for qwen2), and that class
    rebuilds its pipeline (NFC, Qwen2's pre-tokenizer regex, byte-level BPE) from the vocabulary
    and merges alone: so the tokenizer is built as that class, and every loader, rlport's, a
    user's ``AutoTokenizer``, vLLM's, sees the same ids."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _trained_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges trained on ``texts`` with Qwen2's pre-tokenizer."""
    import json

    from tokenizers import Tokenizer, models, trainers

    pipeline = _qwen2_tokenizer({t: i for i, t in enumerate(SPECIAL_TOKENS)}, []).backend_tokenizer
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = pipeline.normalizer
    tok.pre_tokenizer = pipeline.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=[_byte_level(c) for c in CHAR_ALPHABET],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges  # type: ignore[return-value]


def _tokenizer(vocab: Sequence[str] | None, vocab_size: int):  # -> Qwen2Tokenizer
    if vocab is None:
        table = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *map(_byte_level, CHAR_ALPHABET)))}
        return _qwen2_tokenizer(table, [])
    texts = [t for t in vocab if t]
    if not texts:
        raise ConfigError(
            "build_tiny_model(vocab=[]) got no text to train the tokenizer on",
            fix="pass a list of example strings, or vocab=None for a character-level vocabulary",
        )
    return _qwen2_tokenizer(*_trained_bpe(texts, vocab_size))


def build_tiny_model(
    path: str | Path,
    *,
    vocab: Sequence[str] | None,
    hidden_size: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 2,
    seed: int = 0,
    intermediate_size: int | None = None,
    vocab_size: int = 256,
    max_position_embeddings: int = 512,
    initializer_range: float = 0.02,
) -> Path:
    """Save a randomly initialised tiny Qwen2 causal LM and its tokenizer into ``path``.

    :param vocab: example strings to train a BPE tokenizer on (the printable ASCII characters are
        always in its alphabet, so any ASCII text encodes), or ``None`` for a fixed character-level
        vocabulary of the special tokens plus printable ASCII (102 tokens).
    :param vocab_size: target size of a trained BPE vocabulary (ignored when ``vocab`` is None).
    :param initializer_range: standard deviation of the random weights; larger values give
        peakier next-token distributions.
    :return: ``Path(path)``, holding ``config.json``, ``generation_config.json``,
        ``model.safetensors`` (float32, untied embeddings) and the tokenizer files.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if hidden_size % heads or heads % kv_heads:
        raise ConfigError(
            f"build_tiny_model(hidden_size={hidden_size}, heads={heads}, kv_heads={kv_heads}): "
            "hidden_size must be a multiple of heads and heads a multiple of kv_heads",
            fix="use e.g. hidden_size=128, heads=4, kv_heads=2",
        )
    if hidden_size // heads < 32:
        raise ConfigError(
            f"build_tiny_model: head size hidden_size/heads = {hidden_size // heads} is below 32, "
            "which vLLM cannot run",
            fix=f"use heads={max(1, hidden_size // 32)} or a larger hidden_size",
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(vocab, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
