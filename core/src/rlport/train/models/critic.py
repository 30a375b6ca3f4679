"""The critic of one rank (``algorithm.adv_estimator=gae``): a value model beside the actor, on the
same strategy (replicated | ddp | fsdp), with its own optimizer settings (``critic.*``).

The value model is transformers' ``AutoModelForTokenClassification`` with one label: the causal
LM's body and a scalar head (:func:`rlport.train.loading.load_value_model`). The value of the state
before response token ``t`` is read at the position whose logits predict token ``t`` (the same
positions as the actor's logprobs). It learns with PPO's clipped value loss
(:func:`rlport.train.algos.ppo.clipped_value_loss`) towards the GAE returns the driver computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlport.train.algos.loss_agg import MiniBatchSize, micro_share
from rlport.train.algos.masked import pad_rows
from rlport.train.algos.ppo import clipped_value_loss
from rlport.train.config.derive import strategy_of
from rlport.train.config.schema import TrainConfig
from rlport.train.data.batch import Sample
from rlport.train.loading import load_value_model, loading
from rlport.train.models.trained import TrainedModel


class Critic(TrainedModel):
    """Value model, strategy and optimizer of one rank. ``resume_from`` is a checkpoint's critic
    folder: its weights and optimizer state are loaded from there."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        device: str,
        rank: int = 0,
        world: int = 1,
        rt: Any,
        resume_from: str | Path | None = None,
        updates_done: int = 0,
    ) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        name = strategy_of(cfg, world)
        path = str(resume_from or cfg.critic.path)  # derive() made an empty critic.path model.path
        m = cfg.model
        # loaded whole (a new value head is not in the folder fsdp would load shards from), then wrapped
        module = load_value_model(path, **loading(m), device=device)
        self._train_on_strategy(
            module,
            name,
            path=path,
            rt=rt,
            section=cfg.critic,
            mini_batches=cfg.critic.mini_batches,  # derive() gave it the actor's when unset
            resume_from=resume_from,
            updates_done=updates_done,
        )

    def _values(self, chunk: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        values, _tokens, mask = self._response_outputs(self.model, chunk)
        return values.squeeze(-1).float(), mask

    @torch.no_grad()
    def values(self, samples: list[Sample]) -> list[torch.Tensor]:
        """Per sample, the value of each response token's state (on CPU)."""
        out: list[torch.Tensor] = []
        self.model.eval()
        for chunk in self._chunks(samples):
            values, _mask = self._values(chunk)
            out.extend(values[i, : len(s.response_ids)].cpu() for i, s in enumerate(chunk))
        self.model.train()
        return out

    def update(self, samples: list[Sample], old_values: list[torch.Tensor]) -> dict[str, float]:
        """Value updates towards each sample's ``returns``: ``critic.ppo_epochs`` passes of
        ``critic.mini_batches`` optimizer steps."""
        clip = self.cfg.critic.cliprange_value

        def step(chunk: list[Sample], idx: list[int], whole: MiniBatchSize) -> dict[str, float]:
            vpreds, mask = self._values(chunk)
            width, dev = vpreds.shape[1], vpreds.device
            old = pad_rows([old_values[i] for i in idx], width).to(dev)
            returns = pad_rows([s.returns if s.returns is not None else [] for s in chunk], width).to(dev)
            vl = clipped_value_loss(vpreds, old, returns, mask, clip=clip)
            # seq-mean-token-sum-norm: over the response horizon, as verl's critic
            norm = self.cfg.rollout.max_new_tokens
            micro_share(vl.per_token, mask, self.cfg.critic.loss_agg_mode, whole, norm=norm).backward()
            w = float(mask.sum().item())
            return {
                "weight": w,
                "critic/vf_loss": float(vl.loss.item()),
                "critic/vf_clipfrac": float(vl.clip_frac.item()),
                "critic/vpred_mean": float((vpreds.detach() * mask).sum().item() / max(1.0, w)),
            }

        return self._updates(
            samples, step, prefix="critic", seed=self.cfg.trainer.seed + 7919 * self.rank + 1
        )
