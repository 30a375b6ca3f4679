"""The actor of one rank: its model (wrapped by the strategy), the frozen reference, the optimizer,
and the two things it computes: logprobs of rollouts and GRPO updates.

The :class:`Actor` knows nothing of engines or phases (:mod:`rlport.train.workers` runs those); it
needs only the process group to be up when its strategy shards or replicates over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlport.train.config import TrainConfig
from rlport.train.grpo import clipped_policy_loss, entropy_from_logits, kl_k3, masked_mean, token_logprobs
from rlport.train.modeling import load_causal_lm
from rlport.train.strategies import Strategy, build, resolve_name, unwrap


@dataclass
class Sample:
    """One rollout as the actor trains on it."""

    prompt_ids: list[int]
    response_ids: list[int]
    engine_logprobs: list[float]
    advantage: float = 0.0


@dataclass
class Logprobs:
    """Per sample: logprobs at the sampling temperature (the ratio's denominator), at temperature 1
    (compared with the engine's), and the reference's (``None`` without a KL loss)."""

    old: list[torch.Tensor]
    raw: list[torch.Tensor]
    ref: list[torch.Tensor | None]


class Actor:
    """Model, strategy and optimizer of one rank (``rank`` of ``world``)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        path: str,
        device: str,
        rank: int = 0,
        world: int = 1,
        rt: Any,
        resume_from: str | None = None,
    ) -> None:
        from rlport.train.device_parts import before_model_build, optimizer_factory

        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        name = resolve_name(cfg.actor.strategy, world)
        self.prepared_by = before_model_build(name, rt)
        m = cfg.model
        # fsdp shards the structure first and loads each rank's shards itself (never the whole model)
        where = "meta" if name == "fsdp" else device
        module = load_causal_lm(path, dtype=m.dtype, attn_implementation=m.attn_implementation, device=where)
        self.config = module.config
        self.strategy: Strategy = build(
            name,
            world=world,
            device_type=torch.device(device).type,
            fsdp=cfg.actor.fsdp_config,
            megatron=cfg.actor.megatron,
            path=path,
            backend=rt.collectives_backend,
        )
        self.model = self.strategy.wrap(module)
        self.model.train()
        self.reference = None
        if cfg.algorithm.use_kl_loss:
            self.reference = load_causal_lm(
                m.path, dtype=m.dtype, attn_implementation=m.attn_implementation, device=device
            )
            self.reference.eval().requires_grad_(False)
        self.peak_flops = dict(rt.device.peak_flops)
        self.compute_dtype = (cfg.actor.fsdp_config.param_dtype if name == "fsdp" else "") or m.dtype
        factory, self.optimizer_plugin = optimizer_factory("adamw", name, rt)
        self.optimizer_name = repr(factory)
        a = cfg.actor
        self.optimizer: torch.optim.Optimizer = factory(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=a.lr,
            betas=(a.betas[0], a.betas[1]),
            weight_decay=a.weight_decay,
        )
        if resume_from:  # the optimizer state (and a sharded strategy's model shards) of a checkpoint
            self.strategy.load_training_state(self.model, self.optimizer, Path(resume_from))

    @property
    def module(self) -> torch.nn.Module:
        """The Hugging Face model (inside any wrapper)."""
        return unwrap(self.model)

    # -- weights out --------------------------------------------------------------------------------
    def full_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, full tensor)`` per parameter, one at a time (every rank must iterate all)."""
        return self.strategy.full_parameters(self.model)

    def save(self, folder: str | Path) -> None:
        """The model in Hugging Face format (written by rank 0) and what resuming needs (the
        optimizer state; a sharded strategy's shards from every rank). Every rank must call it:
        sharded strategies gather the Hugging Face weights here."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = self.strategy.full_state_dict(self.model)
        self.strategy.save_training_state(self.model, self.optimizer, out, self.rank)
        if self.rank == 0:
            self.module.save_pretrained(out, state_dict=state)

    @torch.no_grad()
    def checksum(self) -> float:
        """A cheap fingerprint of the full weights (ranks must agree after every step)."""
        return float(sum(p.double().sum().item() for _, p in self.full_parameters()))

    # -- forward ------------------------------------------------------------------------------------
    def _batch(
        self, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``prompt + response`` ids, attention mask, the positions whose logits
        predict each response token, the response tokens and their mask."""
        pad = int(self.config.pad_token_id or 0)
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        width, rlen = max(lengths), max(1, max(len(s.response_ids) for s in samples))
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        attn = torch.zeros((len(samples), width), dtype=torch.long)
        pos = torch.zeros((len(samples), rlen), dtype=torch.long)
        tokens = torch.full((len(samples), rlen), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), rlen), dtype=torch.float32)
        for i, s in enumerate(samples):
            seq = s.prompt_ids + s.response_ids
            ids[i, : len(seq)] = torch.tensor(seq)
            attn[i, : len(seq)] = 1
            n = len(s.response_ids)
            pos[i, :n] = torch.arange(len(s.prompt_ids) - 1, len(s.prompt_ids) - 1 + n)
            tokens[i, :n] = torch.tensor(s.response_ids, dtype=torch.long)
            mask[i, :n] = 1.0
        dev = self.device
        return ids.to(dev), attn.to(dev), pos.to(dev), tokens.to(dev), mask.to(dev)

    def _response_logits(
        self, model: Any, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, attn, pos, tokens, mask = self._batch(samples)
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
        rows = torch.arange(len(samples), device=logits.device).unsqueeze(1)
        return logits[rows, pos], tokens, mask

    def _micro(self, samples: list[Sample]) -> list[list[Sample]]:
        k = self.cfg.actor.micro_batch_size
        return [samples[i : i + k] for i in range(0, len(samples), k)]

    @torch.no_grad()
    def logprobs(self, samples: list[Sample]) -> Logprobs:
        temp = self.cfg.rollout.temperature
        out = Logprobs([], [], [])
        self.model.eval()
        for chunk in self._micro(samples):
            logits, tokens, _mask = self._response_logits(self.model, chunk)
            lp_t = token_logprobs(logits, tokens, temp)
            lp_1 = lp_t if temp == 1.0 else token_logprobs(logits, tokens, 1.0)
            ref_lp = None
            if self.reference is not None:
                ref_logits, _, _ = self._response_logits(self.reference, chunk)
                ref_lp = token_logprobs(ref_logits, tokens, temp)
            for i, s in enumerate(chunk):
                n = len(s.response_ids)
                out.old.append(lp_t[i, :n].cpu())
                out.raw.append(lp_1[i, :n].cpu())
                out.ref.append(ref_lp[i, :n].cpu() if ref_lp is not None else None)
        self.model.train()
        return out

    # -- update -------------------------------------------------------------------------------------
    def update(self, samples: list[Sample], lp: Logprobs) -> dict[str, float]:
        """GRPO updates on ``samples``: ``actor.ppo_epochs`` passes of ``actor.mini_batches``
        optimizer steps, micro-batches accumulating gradients."""
        a = self.cfg.actor
        temp = self.cfg.rollout.temperature
        sums = dict.fromkeys(
            ("actor/pg_loss", "actor/kl", "actor/entropy", "actor/clip_frac", "actor/approx_kl"), 0.0
        )
        weights = 0.0
        grad_norms: list[float] = []
        order = list(range(len(samples)))
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed + 7919 * self.rank)
        for _epoch in range(a.ppo_epochs):
            if a.mini_batches > 1:
                order = torch.randperm(len(samples), generator=gen).tolist()
            size = math.ceil(len(samples) / a.mini_batches)
            for start in range(0, len(samples), size):
                mb = order[start : start + size]
                mb_tokens = sum(len(samples[i].response_ids) for i in mb)
                self.optimizer.zero_grad(set_to_none=True)
                starts = range(0, len(mb), a.micro_batch_size)
                for k in starts:
                    idx = mb[k : k + a.micro_batch_size]
                    with self.strategy.accumulate(self.model, last=k == starts[-1]):
                        stats = self._micro_step([samples[i] for i in idx], idx, lp, mb_tokens, temp)
                    w = stats.pop("weight")
                    weights += w
                    for key, value in stats.items():
                        sums[key] += value * w
                self.strategy.reduce(self.model)
                grad_norms.append(self._clip(a.grad_clip))
                self.optimizer.step()
        out = {k: v / max(1.0, weights) for k, v in sums.items()}
        out["actor/grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        out["actor/updates"] = float(len(grad_norms))
        out["actor/lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out

    def throughput(self, samples: list[Sample], seconds: float) -> dict[str, float]:
        """``perf/update_tokens_per_s`` and ``perf/mfu`` (where the device's peak is known) of an
        :meth:`update` on ``samples`` that took ``seconds`` (:mod:`rlport.train.perf`)."""
        from rlport.train import perf

        key = perf.peak_key(self.compute_dtype, torch.get_float32_matmul_precision())
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        return perf.update_metrics(
            self.config,
            lengths,
            passes=self.cfg.actor.ppo_epochs,
            seconds=seconds,
            peak_flops=self.peak_flops,
            key=key,
        )

    def _micro_step(
        self, chunk: list[Sample], idx: list[int], lp: Logprobs, mb_tokens: int, temp: float
    ) -> dict[str, float]:
        """Forward and backward of one micro-batch; its loss terms and token count."""
        al = self.cfg.algorithm
        logits, tokens, mask = self._response_logits(self.model, chunk)
        logp = token_logprobs(logits, tokens, temp)
        old = _pad([lp.old[i] for i in idx], logp.shape, logp.device)
        adv = torch.tensor([s.advantage for s in chunk], device=logp.device)
        pl = clipped_policy_loss(
            logp, old, adv, mask, clip_low=al.clip_ratio_low, clip_high=al.clip_ratio_high
        )
        loss = pl.loss
        kl_val = torch.tensor(0.0)
        if self.reference is not None:
            ref = _pad([lp.ref[i] for i in idx], logp.shape, logp.device)  # type: ignore[misc]
            kl_val = masked_mean(kl_k3(logp, ref), mask)
            loss = loss + al.kl_coef * kl_val
        ent = masked_mean(entropy_from_logits(logits.detach() if al.entropy_coef == 0 else logits), mask)
        if al.entropy_coef:
            loss = loss - al.entropy_coef * ent
        w = float(mask.sum().item())
        (loss * (w / max(1, mb_tokens))).backward()
        return {
            "weight": w,
            "actor/pg_loss": float(pl.loss.item()),
            "actor/kl": float(kl_val.item()),
            "actor/entropy": float(ent.item()),
            "actor/clip_frac": float(pl.clip_frac.item()),
            "actor/approx_kl": float(pl.approx_kl.item()),
        }

    def _clip(self, grad_clip: float) -> float:
        """Clip the global gradient norm (over the shards too: DTensor gradients give the full
        norm) and return it."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm.item())


def _pad(rows: list[torch.Tensor], shape: torch.Size, device: Any) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.float32, device=device)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row.to(device)
    return out
