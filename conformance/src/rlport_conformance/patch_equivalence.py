"""Run in a fresh subprocess by the ``patches.model_equivalence`` cases: a real transformers model of
each family, built locally from a tiny config, gives the same logits with the active plugins'
patches applied as without, within the attention tolerance rule.

Before ``rlport.init()`` (nothing patched yet) it builds each model, seeded, with its norm weights
moved off 1 so that a patch dropping them shows, and computes a padded batch's logits in float64
(the reference) and float32 (plain torch) on the host. Then it initialises (the patches apply),
imports the patch targets, builds the model again with the same weights on the plugin's device and
computes the patched float32 logits; last it reverts every patch. Prints one JSON object: per family
the three errors the rule needs, and the patches that were applied.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

FAMILIES = ("qwen2", "llama")


def _config(family: str) -> Any:
    from transformers import LlamaConfig, Qwen2Config

    kind = {"qwen2": Qwen2Config, "llama": LlamaConfig}[family]
    return kind(
        vocab_size=101,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        attn_implementation="sdpa",
    )


def _model(family: str, state: dict[str, Any] | None = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(_config(family)).eval()
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


def main(families: list[str]) -> int:
    os.environ["RLPORT_SUMMARY"] = "0"
    import torch

    ids, mask = _inputs()
    before: dict[str, Any] = {}
    for family in families:
        model = _model(family)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        reference = _logits(model.to(torch.float64), ids, mask, "cpu")
        plain = _logits(_model(family, state).to(torch.float32), ids, mask, "cpu")
        before[family] = (state, reference, plain)

    import rlport
    from rlport.patches import get_manager, revert_all
    from rlport_conformance import attention_math as am

    rt = rlport.init()
    device = rt.torch_device()
    manager = get_manager()
    manager.import_targets()
    applied = [r.target for r in manager.records if r.status == "applied"]
    out: dict[str, Any] = {"device": device, "applied": applied, "families": {}}
    for family, (state, reference, plain) in before.items():
        patched = _logits(_model(family, state).to(device=device, dtype=torch.float32), ids, mask, device)
        out["families"][family] = {
            "error": am.max_error(patched, reference),
            "reference_error": am.max_error(plain, reference),
            "rounding": am.rounding_error(reference, torch.float32),
        }
    revert_all()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(FAMILIES)))
