"""What the NPU changes in training: torch_npu's fused AdamW, and MindSpeed's Megatron adaptor
imported before Megatron is.

``torch_npu.optim.NpuFusedAdamW(params, lr, betas, eps, weight_decay, amsgrad)`` is torch's AdamW
with the update fused over all parameters (Ascend's op-plugin documentation,
``docs/context/torch_npu-optim-NpuFusedAdamW.md``). It regroups the parameters' memory, so the
documentation forbids moving, reassigning or freeing a parameter afterwards; it is offered for the
strategies with plain tensors (FSDP2's DTensors stay on torch's own AdamW).

``import mindspeed.megatron_adaptor`` patches Megatron-LM (megatron-core) for the NPU (fused
kernels in place of Transformer Engine's, the NPU's collectives) and must come before anything
imports Megatron; MindSpeed's README starts every script with it.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from rlport.errors import RlportError

OPTIMIZER = "torch_npu.optim:NpuFusedAdamW"
OPTIMIZER_STRATEGIES = ("replicated", "ddp", "megatron")
ADAPTOR = "mindspeed.megatron_adaptor"
INSTALL = (
    "pip install mindspeed (or from source, the branch matching your megatron-core: "
    "git clone https://gitcode.com/Ascend/MindSpeed && pip install -e ./MindSpeed)"
)


def optimizer(name: str, strategy: str) -> Any | None:
    """torch_npu's fused AdamW for ``adamw`` where it imports and takes the strategy's parameters."""
    if name != "adamw" or strategy not in OPTIMIZER_STRATEGIES:
        return None
    from rlport.optim import imported_optimizer

    return imported_optimizer(OPTIMIZER)


def before_model_build(strategy: str) -> None:
    """For ``megatron``: import MindSpeed's adaptor, before Megatron is imported."""
    if strategy != "megatron":
        return
    # "megatron" alone is the namespace package a find_spec("megatron.core") loads: harmless
    early = sorted(m for m in sys.modules if m == "megatron.core" or m.startswith("megatron.core."))
    if early and ADAPTOR not in sys.modules:
        raise RlportError(
            f"{early[0]} was imported before {ADAPTOR}, so MindSpeed cannot patch Megatron for the NPU",
            "import nothing from megatron before rlport builds the actor (rlport imports the adaptor "
            "first when actor.strategy=megatron)",
        )
    try:
        importlib.import_module(ADAPTOR)
    except ImportError as exc:
        raise RlportError(
            f"actor.strategy=megatron on Ascend needs MindSpeed's adaptor ({ADAPTOR}): "
            f"{type(exc).__name__}: {exc}",
            INSTALL,
        ) from exc
