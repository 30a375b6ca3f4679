"""Loading the actor, reference and tokenizer from a local Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError

#: tokenizer classes saved by a plain ``PreTrainedTokenizerFast`` (transformers 4 and 5 names);
#: ``AutoTokenizer`` would map such a folder to the model type's own class and change tokenisation.
_GENERIC_TOKENIZERS = {"PreTrainedTokenizerFast", "TokenizersBackend"}


def loading(model_cfg: Any) -> dict[str, Any]:
    """The arguments of :func:`load_causal_lm` / :func:`load_value_model` that ``model.*`` sets."""
    return {
        "dtype": model_cfg.dtype,
        "attn_implementation": model_cfg.attn_implementation,
        "trust_remote_code": model_cfg.trust_remote_code,
    }


def quiet_transformers() -> None:
    """Turn off transformers' per-file progress bars (loading/saving shards): the run has its own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


#: text whose ids every loader of a folder must agree on (spaces, newline, digits, punctuation)
_PROBE_TEXT = "repeat the letter c\n 12 + 3.5 = ?"


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The folder's tokenizer, keeping a generic fast tokenizer generic.

    A folder whose ``tokenizer_config.json`` declares a generic class (``PreTrainedTokenizerFast``)
    but whose model type transformers maps to its own class (qwen2 in transformers 5) loads
    differently in ``AutoTokenizer``: rlport keeps the declared tokenizer, the one the folder was
    written with, and warns when the two give different ids, since any other tool (vLLM's
    tokenizer, TRL, an evaluation script) would see other tokens. Folders rlport writes
    (:func:`rlport.rollout.tiny.build_tiny_model`) declare the model type's own class."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg_file = Path(path) / "tokenizer_config.json"
    cls = None
    if cfg_file.is_file():
        cls = json.loads(cfg_file.read_text()).get("tokenizer_class")
    try:
        if cls in _GENERIC_TOKENIZERS:
            tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        else:
            tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ConfigError(
            f"cannot load a tokenizer from model.path '{path}': {exc}",
            "give a model folder with tokenizer.json / tokenizer_config.json (save_pretrained writes them)",
        ) from exc
    if cls in _GENERIC_TOKENIZERS:
        _warn_if_auto_differs(path, tok, trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _warn_if_auto_differs(path: str | Path, tok: Any, trust_remote_code: bool) -> None:
    import warnings

    from transformers import AutoTokenizer

    try:
        auto = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception:
        return
    ours, theirs = tok(_PROBE_TEXT).input_ids, auto(_PROBE_TEXT).input_ids
    if ours != theirs:
        warnings.warn(
            f"model.path '{path}': its tokenizer_config.json declares a generic tokenizer, which "
            f"rlport uses, but AutoTokenizer loads it as {type(auto).__name__} and gives other ids "
            f"({len(ours)} vs {len(theirs)} tokens for {_PROBE_TEXT!r}): vLLM, TRL and evaluation "
            "scripts would see other tokens than training does. Fix: save the tokenizer as the model "
            "type's own class (e.g. transformers.Qwen2Tokenizer(vocab=..., merges=...)), or set "
            "tokenizer_class in tokenizer_config.json to one AutoTokenizer keeps",
            UserWarning,
            stacklevel=3,
        )


def stop_token_ids(tokenizer: Any, model_path: str | Path) -> tuple[int, ...]:
    """The tokenizer's EOS plus any EOS ids in generation_config.json."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = Path(model_path) / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        for i in eos if isinstance(eos, list) else [eos]:
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return tuple(ids)


def load_causal_lm(
    path: str | Path, *, dtype: str, attn_implementation: str, device: str, trust_remote_code: bool = False
) -> Any:
    """``AutoModelForCausalLM`` from ``path`` with the configured attention, on ``device``; on the
    ``meta`` device, the model's structure alone (from its config, no weights read), for a strategy
    that shards before it loads (:mod:`rlport.train.strategies.fsdp`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if attn_implementation == "rlport":
        from rlport.attention.transformers_integration import register

        register()
    if device == "meta":
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(
                config,
                dtype=getattr(torch, dtype),
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        dtype=getattr(torch, dtype),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
    )
    return model.to(device)


def checkpoint_tensors(path: str | Path) -> dict[str, Any]:
    """Every tensor of the folder's ``*.safetensors`` files, memory-mapped (nothing is read until a
    tensor is used)."""
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def load_value_model(
    path: str | Path, *, dtype: str, attn_implementation: str, device: str, trust_remote_code: bool = False
) -> Any:
    """A critic: ``AutoModelForTokenClassification`` with one label from ``path`` (a causal LM's
    folder gives the body its weights and a freshly initialised scalar head, as verl builds its
    critic; a saved critic's folder gives both), without dropout before the head, with the
    configured attention, on ``device``."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification

    if attn_implementation == "rlport":
        from rlport.attention.transformers_integration import register

        register()
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists lm_head as unused and the head as new: expected
    try:
        config = AutoConfig.from_pretrained(str(path), num_labels=1, trust_remote_code=trust_remote_code)
        config.classifier_dropout = 0.0  # a value must not be noisy in training (transformers' default: 0.1)
        model = AutoModelForTokenClassification.from_pretrained(
            str(path),
            config=config,
            dtype=getattr(torch, dtype),
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
    except ValueError as exc:  # transformers has no token-classification class for this architecture
        raise ConfigError(
            f"critic.path='{path}': transformers cannot add a value head to this model: {exc}",
            "rlport train critic.path=/a/model/with/a/ForTokenClassification/class (Llama, Qwen2, "
            "Mistral, ...), or algorithm.adv_estimator=grpo",
        ) from exc
    finally:
        hf_logging.set_verbosity(level)
    return model.to(device)
