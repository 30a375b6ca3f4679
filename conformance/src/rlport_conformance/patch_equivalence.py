"""For the ``patches.model_equivalence`` cases, in the patch check's fresh subprocess
(:mod:`rlport_conformance.patch_check`): a real transformers model of each family, built locally
from a tiny config, gives the same logits with the active plugins' patches applied as without,
within the attention tolerance rule, and the same parameter gradients of a loss over them (the
rule's gradient factor): a patch whose forward is right and whose backward is wrong breaks every
training step.

Before ``rlport.init()`` (nothing patched yet) :func:`unpatched` builds each model, seeded, with its
norm weights moved off 1 so that a patch dropping them shows, and computes a padded batch's logits in
float64 (the reference) and float32 (plain torch) on the host. Once the patches apply,
:func:`patched` builds the model again with the same weights on the plugin's device and measures the
patched float32 logits.
"""

from __future__ import annotations

from typing import Any

FAMILIES = ("qwen2", "llama")


def tiny_config(family: str, hidden_size: int = 64) -> Any:
    """A two-layer transformers config of ``family`` (4 query heads over 2 kv heads, 101 tokens)."""
    from transformers import LlamaConfig, Qwen2Config

    kind = {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]
    return kind(
        vocab_size=101,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation="sdpa",
    )


def _model(family: str, state: dict[str, Any] | None = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    if state is None:
        gen = torch.Generator().manual_seed(99)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "norm" in name:
                    param.copy_(1 + 0.3 * torch.randn(param.shape, generator=gen))
    else:
        model.load_state_dict(state, strict=True)
    return model


def _inputs() -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 101, (2, 23), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the second row
    return ids, mask


def _logits(model: Any, ids: Any, mask: Any, device: str) -> Any:
    import torch

    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    return out.detach().to("cpu", torch.float64)[mask.bool()]


def _gradients(model: Any, ids: Any, mask: Any, device: str) -> Any:
    """Every parameter's gradient (float64, host, concatenated in name order) of the sum of the
    valid positions' logits weighted by fixed seeded weights (so every logit matters)."""
    import torch

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    gen = torch.Generator().manual_seed(17)
    weights = torch.randn(logits.shape, generator=gen).to(device=device, dtype=logits.dtype)
    (logits * weights)[mask.to(device).bool()].sum().backward()
    grads = [p.grad for _n, p in sorted(model.named_parameters()) if p.requires_grad]
    return torch.cat([g.detach().to("cpu", torch.float64).reshape(-1) for g in grads if g is not None])


def unpatched(families: list[str]) -> dict[str, Any]:
    """Per family, before any patch applies: the weights, and the float64 (reference) and float32
    (plain torch) logits on the host."""
    import torch

    ids, mask = _inputs()
    before: dict[str, Any] = {}
    for family in families:
        model = _model(family)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        reference = _logits(model.to(torch.float64), ids, mask, "cpu")
        plain = _logits(_model(family, state).to(torch.float32), ids, mask, "cpu")
        grads = (
            _gradients(_model(family, state).to(torch.float64), ids, mask, "cpu"),
            _gradients(_model(family, state).to(torch.float32), ids, mask, "cpu"),
        )
        before[family] = (state, reference, plain, grads)
    return before


def patched(before: dict[str, Any], device: str) -> dict[str, Any]:
    """With the patches applied: per family the patched float32 logits' error on ``device``, plain
    torch's error and the reference's rounding, all against the float64 reference."""
    import torch

    from rlport_conformance import attention_math as am

    ids, mask = _inputs()
    out = {}
    for family, (state, reference, plain, (grad_reference, grad_plain)) in before.items():
        logits = _logits(_model(family, state).to(device=device, dtype=torch.float32), ids, mask, device)
        grads = _gradients(_model(family, state).to(device=device, dtype=torch.float32), ids, mask, device)
        out[family] = {
            "error": am.max_error(logits, reference),
            "reference_error": am.max_error(plain, reference),
            "rounding": am.rounding_error(reference, torch.float32),
            "gradient_error": am.max_error(grads, grad_reference),
            "gradient_reference_error": am.max_error(grad_plain, grad_reference),
            "gradient_rounding": am.rounding_error(grad_reference, torch.float32),
        }
    return out
