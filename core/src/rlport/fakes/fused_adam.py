"""A fake of a vendor's fused Adam/AdamW optimizer class (apex's ``FusedAdam``, torch_npu's
``NpuFusedAdamW``), for testing which optimizer a plugin hands the actor.

The update is torch's own: ``torch.optim.AdamW`` (decoupled weight decay) or, for a class built
with ``adam_w_mode=False``, ``torch.optim.Adam`` (L2 penalty), on the host, single-tensor path.
Like apex's class it refuses ``amsgrad=True`` and, when given ``requires`` (apex: ``("amp_C",)``),
imports those extension modules in its constructor, raising ``ImportError`` where one is missing.
Every construction and every ``step`` is recorded in :attr:`FakeFusedAdam.calls`.

Usage in a test::

    fake = FakeFusedAdam("FusedAdam", requires=("amp_C",))
    monkeypatch.setitem(sys.modules, "apex.optimizers", fake.module("apex.optimizers"))
    ...
    assert fake.calls[0] == ("init", {"lr": 1e-5, ...})
"""

from __future__ import annotations

import importlib
import importlib.machinery
import types
from typing import Any

import torch


class FakeFusedAdam:
    """Builds the fake class, named ``class_name``; ``adam_w_mode`` is its constructor default
    (``None``: the class takes no such argument, as torch_npu's AdamW)."""

    def __init__(
        self, class_name: str, *, requires: tuple[str, ...] = (), adam_w_mode: bool | None = True
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.requires = requires
        self.cls = self._make(class_name, adam_w_mode)

    def module(self, name: str) -> types.ModuleType:
        """A module exposing the class (put it in ``sys.modules``)."""
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        setattr(mod, self.cls.__name__, self.cls)
        return mod

    def _make(self, class_name: str, adam_w_mode: bool | None) -> type:
        fake = self

        class Fused(torch.optim.Optimizer):
            def __init__(
                self,
                params: Any,
                lr: float = 1e-3,
                betas: tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8,
                weight_decay: float = 0.0,
                amsgrad: bool = False,
                **options: Any,
            ) -> None:
                for name in fake.requires:
                    importlib.import_module(name)  # the real class loads its kernels here
                if amsgrad:
                    raise RuntimeError(f"{class_name} does not support the AMSGrad variant.")
                unknown = set(options) - ({"adam_w_mode"} if adam_w_mode is not None else set())
                if unknown:
                    raise TypeError(f"{class_name}.__init__() got unexpected arguments {sorted(unknown)}")
                decoupled = options.get("adam_w_mode", adam_w_mode) is not False
                params = list(params)
                fake.calls.append(
                    (
                        "init",
                        {
                            "lr": lr,
                            "betas": tuple(betas),
                            "eps": eps,
                            "weight_decay": weight_decay,
                            **options,
                        },
                    )
                )
                super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
                kind = torch.optim.AdamW if decoupled else torch.optim.Adam
                self._inner = kind(
                    params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False
                )
                self.state = self._inner.state
                self.param_groups = self._inner.param_groups

            @torch.no_grad()
            def step(self, closure: Any = None) -> Any:
                fake.calls.append(("step", {"params": sum(len(g["params"]) for g in self.param_groups)}))
                return self._inner.step(closure)

        Fused.__name__ = Fused.__qualname__ = class_name
        return Fused
