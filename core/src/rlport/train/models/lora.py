"""LoRA on the actor (``model.lora_rank > 0``, verl's ``actor_rollout_ref.model.lora_rank``).

peft adds low-rank adapters (``W + scaling * B @ A``, ``scaling = lora_alpha / lora_rank``) to the
modules ``model.target_modules`` names, and freezes everything else, so the optimizer holds only
the adapters. What leaves the actor is always a plain Hugging Face model:

- the rollout engine receives the merged weights (:func:`merged_weights`) under the base model's
  names, so no engine needs to know about adapters;
- a checkpoint holds the merged model (it loads with ``AutoModelForCausalLM``, as without LoRA)
  and, in ``lora_adapter/``, the adapters peft can load (``PeftModel.from_pretrained``), from which
  a resumed run continues;
- the reference model is the actor with its adapters switched off (peft's ``disable_adapter``),
  as verl does, so LoRA does not hold a second copy of the model.

peft is an optional extra: ``pip install 'rlport[lora]'``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from rlport.errors import ConfigError

#: peft's prefix of the base model's parameter names inside a ``PeftModel``
_PREFIX = "base_model.model."
_BASE = ".base_layer."
_ADAPTER = "default"


def _peft() -> Any:
    from rlport.extras import import_optional

    return import_optional("peft", "lora", purpose="model.lora_rank > 0")


def add_adapters(
    module: torch.nn.Module, model_cfg: Any, adapter: str | Path | None = None, *, seed: int = 0
) -> Any:
    """``module`` with LoRA adapters: new ones per ``model_cfg`` (rank, alpha, target and excluded
    modules), or, with ``adapter``, those saved in that folder, trainable. The base is frozen.
    New adapters are drawn from ``seed`` (peft draws ``A`` at random), so every rank holds the same
    ones and a run repeats; the caller's random state is left as it was."""
    peft = _peft()
    if (
        adapter
    ):  # checked by rlport.train.driver.preflight.check_lora (a resumed checkpoint's is written by save)
        return peft.PeftModel.from_pretrained(module, str(Path(adapter).expanduser()), is_trainable=True)
    targets = list(model_cfg.target_modules)
    config = peft.LoraConfig(
        r=model_cfg.lora_rank,
        lora_alpha=model_cfg.lora_alpha,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        exclude_modules=list(model_cfg.exclude_modules) or None,
        bias="none",
    )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return peft.get_peft_model(module, config)
    except ValueError as exc:  # a target module the model does not have
        raise ConfigError(
            f"model.target_modules={targets}: {exc}",
            "model.target_modules=[all-linear], or names of the model's nn.Linear modules "
            "(q_proj, k_proj, v_proj, o_proj, ...)",
        ) from exc


def scalings(module: torch.nn.Module) -> dict[str, float]:
    """``{module name: scaling}`` of every adapted module, names as :func:`merged_weights` gets them."""
    from peft.tuners.lora import LoraLayer

    return {
        name: float(m.scaling[_ADAPTER]) for name, m in module.named_modules() if isinstance(m, LoraLayer)
    }


def merged_weights(
    named: Iterable[tuple[str, torch.Tensor]], scaling: dict[str, float]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's ``(name, tensor)`` pairs, the adapters merged in (``W + scaling * B @ A``),
    from a ``PeftModel``'s parameters in their order (each adapted weight is held only until its
    ``A`` and ``B`` arrive)."""
    held: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in named:
        owner = next((m for m in _owners(name) if m in scaling), None)
        if owner is None:
            yield _hf_name(name), tensor
            continue
        part = name[len(owner) + 1 :]
        if part.startswith("base_layer.") and part != "base_layer.weight":
            yield _hf_name(name), tensor  # the bias: unchanged
            continue
        parts = held.setdefault(owner, {})
        parts[part.split(".")[0]] = tensor  # base_layer, lora_A or lora_B
        if len(parts) == 3:
            del held[owner]
            w, a, b = parts["base_layer"], parts["lora_A"], parts["lora_B"]
            delta = (b.to(torch.float32) @ a.to(torch.float32)) * scaling[owner]
            yield _hf_name(f"{owner}.base_layer.weight"), (w.to(torch.float32) + delta).to(w.dtype)
    if held:
        raise RuntimeError(
            f"LoRA weights incomplete for {sorted(held)}: each needs base_layer, lora_A and lora_B"
        )


def _owners(name: str) -> Iterator[str]:
    """The module names a parameter name can belong to, innermost first."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        yield ".".join(parts[:i])


def _hf_name(name: str) -> str:
    return name.removeprefix(_PREFIX).replace(_BASE, ".")


def adapter_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapters' tensors of a ``PeftModel``'s state dict."""
    return {k: v for k, v in state.items() if ".lora_A." in k or ".lora_B." in k}
