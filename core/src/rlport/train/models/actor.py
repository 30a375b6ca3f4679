"""The actor of one rank: its model (wrapped by the strategy), the frozen reference, the optimizer,
and the two things it computes: logprobs of rollouts and policy updates (on each token's advantage,
:class:`rlport.train.data.batch.Sample`).

The :class:`Actor` knows nothing of engines or phases (:mod:`rlport.train.workers.worker` runs those); it
needs only the process group to be up when its strategy shards or replicates over ranks. What it
shares with the critic (strategy, optimizer, the update loop) is :class:`rlport.train.models.trained.TrainedModel`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlport.train.algos.grpo import entropy_from_logits, token_logprobs
from rlport.train.algos.loss_agg import MiniBatchSize, micro_share
from rlport.train.algos.masked import masked_mean, pad_rows, response_mask
from rlport.train.algos.policy_losses import POLICY_LOSSES
from rlport.train.algos.ppo import kl_penalty
from rlport.train.algos.rollout_correction import (
    Correction,
    bypass_policy_loss,
    correct,
    enabled,
    summed_over,
    weighted,
)
from rlport.train.config.derive import strategy_of
from rlport.train.config.schema import TrainConfig
from rlport.train.data.batch import Sample
from rlport.train.loading import load_causal_lm, loading
from rlport.train.models.trained import TrainedModel

__all__ = ["Actor", "Logprobs", "Sample"]


@dataclass
class Logprobs:
    """Per sample: logprobs at the sampling temperature (the ratio's denominator), at temperature 1
    (compared with the engine's), and the reference's (``None`` without a reference model)."""

    old: list[torch.Tensor]
    raw: list[torch.Tensor]
    ref: list[torch.Tensor | None]


def needs_reference(cfg: TrainConfig) -> bool:
    """A reference model is held for the KL loss and for the KL in the reward."""
    return cfg.algorithm.use_kl_loss or cfg.algorithm.use_kl_in_reward


class Actor(TrainedModel):
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
        updates_done: int = 0,
    ) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        name = strategy_of(cfg, world)
        self.prepared_by = rt.before_model_build(name)
        m = cfg.model
        # fsdp shards the structure first and loads each rank's shards itself (never the whole model);
        # with LoRA, peft adapts a loaded model, which fsdp then shards
        where = "meta" if name == "fsdp" and not m.lora_rank else device
        # with LoRA, the base is model.path and the adapters are the checkpoint's (a resume) or new
        base = m.path if m.lora_rank else path
        module = load_causal_lm(base, **loading(m), device=where)
        self.lora_scaling: dict[str, float] = {}  # adapted module -> scaling; {} without LoRA
        if m.lora_rank:
            from rlport.train.checkpoint import ADAPTER_DIR
            from rlport.train.models.lora import add_adapters, scalings

            adapter = Path(resume_from) / ADAPTER_DIR if resume_from else m.lora_adapter_path
            module = add_adapters(module, m, adapter, seed=cfg.trainer.seed)
            self.lora_scaling = scalings(module)
        self._train_on_strategy(
            module,
            name,
            path=path,
            rt=rt,
            section=cfg.actor,
            mini_batches=cfg.actor.mini_batches,
            resume_from=resume_from,  # the optimizer state (and a sharded strategy's shards)
            updates_done=updates_done,  # where the learning-rate schedule continues
        )
        self.reference = None  # with LoRA, the reference is the actor with its adapters off
        if needs_reference(cfg) and not self.lora_scaling:
            self.reference = load_causal_lm(m.path, **loading(m), device=device)
            self.reference.eval().requires_grad_(False)
        self.peak_flops = dict(rt.device.peak_flops)
        self.compute_dtype = (cfg.actor.fsdp_config.param_dtype if name == "fsdp" else "") or m.dtype

    def lora_text(self) -> str:
        """``lora=rR (T of N parameters trained)`` with LoRA, else ``""`` (the workers' start line)."""
        if not self.lora_scaling:
            return ""
        params = list(self.model.parameters())
        trained = sum(p.numel() for p in params if p.requires_grad)
        return f"lora=r{self.cfg.model.lora_rank} ({trained:,} of {sum(p.numel() for p in params):,} parameters trained)"

    # -- weights out (LoRA: the adapters merged, under the base model's names) -------------------------
    def full_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        named = super().full_parameters()
        if not self.lora_scaling:
            return named
        from rlport.train.models.lora import merged_weights

        return merged_weights(named, self.lora_scaling)

    def _write_model(self, out: Path, state: dict[str, torch.Tensor]) -> None:
        """The merged model in Hugging Face format and, with LoRA, the adapters in ``lora_adapter/``."""
        if not self.lora_scaling:
            return super()._write_model(out, state)
        from rlport.train.checkpoint import ADAPTER_DIR
        from rlport.train.models.lora import adapter_state, merged_weights

        peft_model = self.module
        merged = dict(merged_weights(state.items(), self.lora_scaling))
        peft_model.get_base_model().save_pretrained(out, state_dict=merged)
        peft_model.save_pretrained(out / ADAPTER_DIR, state_dict=adapter_state(state))

    @torch.no_grad()
    def logprobs(self, samples: list[Sample]) -> Logprobs:
        """The old, raw and reference logprobs of ``samples``. In rollout correction's bypass mode
        the old ones are the engine's and the actor runs no forward for them (``raw`` is then
        empty: there is nothing to compare the engine's with)."""
        temp = self.cfg.rollout.temperature
        bypass = self.cfg.algorithm.rollout_correction.bypass_mode
        out = Logprobs([], [], [])
        self.model.eval()
        for chunk in self._chunks(samples):
            if not bypass:
                logits, tokens, _mask = self._response_outputs(self.model, chunk)
                lp_t = token_logprobs(logits, tokens, temp)
                lp_1 = lp_t if temp == 1.0 else token_logprobs(logits, tokens, 1.0)
            ref_lp = self._reference_logprobs(chunk, temp)
            for i, s in enumerate(chunk):
                n = len(s.response_ids)
                if bypass:
                    out.old.append(torch.tensor(s.engine_logprobs[:n], dtype=torch.float32))
                else:
                    out.old.append(lp_t[i, :n].cpu())
                    out.raw.append(lp_1[i, :n].cpu())
                out.ref.append(ref_lp[i, :n].cpu() if ref_lp is not None else None)
        self.model.train()
        return out

    def _reference_logprobs(self, chunk: list[Sample], temp: float) -> torch.Tensor | None:
        """The reference's logprobs of ``chunk`` (``None`` without a reference): the reference
        model's, or with LoRA the actor's with its adapters off."""
        if self.reference is not None:
            ref_logits, tokens, _ = self._response_outputs(self.reference, chunk)
        elif self.lora_scaling and needs_reference(self.cfg):
            trained = [p for p in self.model.parameters() if p.requires_grad]
            with self.module.disable_adapter():
                # peft marks the adapters frozen while they are off; FSDP2 reads requires_grad at
                # its first forward to choose the dtype gradients reduce in (none trained: no cast
                # back to the float32 adapters), and this can be the first forward (bypass mode)
                for p in trained:
                    p.requires_grad_(True)
                ref_logits, tokens, _ = self._response_outputs(self.model, chunk)
        else:
            return None
        return token_logprobs(ref_logits, tokens, temp)

    # -- update -------------------------------------------------------------------------------------
    def update(self, samples: list[Sample], lp: Logprobs) -> dict[str, float]:
        """Policy updates on ``samples``: ``actor.ppo_epochs`` passes of ``actor.mini_batches``
        optimizer steps, micro-batches accumulating gradients."""
        temp = self.cfg.rollout.temperature
        fix = self._correction(samples, lp)

        def step(chunk: list[Sample], idx: list[int], whole: MiniBatchSize) -> dict[str, float]:
            return self._micro_step(chunk, idx, lp, whole, temp, fix)

        kept = None if fix is None else [int(n) for n in fix.keep.sum(-1).tolist()]
        seed = self.cfg.trainer.seed + 7919 * self.rank
        out = self._updates(samples, step, prefix="actor", seed=seed, loss_tokens=kept)
        return out if fix is None else {**out, **fix.metrics}

    def _correction(self, samples: list[Sample], lp: Logprobs) -> Correction | None:
        """Rollout correction of this rank's ``samples`` (``algorithm.rollout_correction``, but
        not bypass mode, which corrects in each micro-batch): the importance weights and the
        rejection from the actor's logprobs at temperature 1 (the engine's are at temperature 1)
        against the engine's; batch normalisation sums over the ranks (one all-reduce)."""
        rc = self.cfg.algorithm.rollout_correction
        if rc.bypass_mode or not enabled(rc):
            return None
        width = max(1, max(len(s.response_ids) for s in samples))
        mask = response_mask([len(s.response_ids) for s in samples])
        engine = pad_rows([s.engine_logprobs[: len(s.response_ids)] for s in samples], width)
        ranks, group = self.strategy.data_parallel()
        return correct(
            pad_rows(lp.raw, width), engine, mask, rc, all_reduce=summed_over(ranks, group, self.device)
        )

    def throughput(self, samples: list[Sample], seconds: float) -> dict[str, float]:
        """``perf/update_tokens_per_s`` and ``perf/mfu`` (where the device's peak is known) of an
        :meth:`update` on ``samples`` that took ``seconds`` (:mod:`rlport.train.tracking.perf`)."""
        from rlport.train.tracking import perf

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
        self,
        chunk: list[Sample],
        idx: list[int],
        lp: Logprobs,
        whole: MiniBatchSize,
        temp: float,
        fix: Correction | None = None,
    ) -> dict[str, float]:
        """Forward and backward of one micro-batch (its share of the mini-batch ``whole``'s loss,
        under ``algorithm.loss_agg_mode``); its loss terms (token means) and token count. With
        rollout correction ``fix``, rejected tokens leave every term and the weights multiply the
        policy loss; bypass mode corrects here, against the engine's logprobs (``lp.old``)."""
        al = self.cfg.algorithm
        logits, tokens, mask = self._response_outputs(self.model, chunk)
        logp = token_logprobs(logits, tokens, temp)
        width, dev = logp.shape[1], logp.device
        old = pad_rows([lp.old[i] for i in idx], width).to(dev)
        adv = pad_rows([s.advantages for s in chunk if s.advantages is not None], width).to(dev)
        if adv.shape[0] != len(chunk):
            raise ValueError(
                "Actor.update: a sample without advantages (the driver computes them before train)"
            )
        found: dict[str, float] = {}
        if al.rollout_correction.bypass_mode:
            pl, found = bypass_policy_loss(logp, old, adv, mask, al)
        else:
            rows = torch.tensor(idx)
            if fix is not None:
                mask = fix.keep[rows, :width].to(dev)
            pl = POLICY_LOSSES[al.policy_loss](logp, old, adv, mask, al)
            if fix is not None and fix.weights is not None:
                pl = weighted(pl, fix.weights[rows, :width].to(dev), mask, al.policy_loss)
        per_token = pl.per_token
        kl_val = torch.tensor(0.0)
        if al.use_kl_loss:
            ref = pad_rows([lp.ref[i] for i in idx], width).to(dev)  # type: ignore[misc]
            kl_tokens = kl_penalty(logp, ref, al.kl_loss_type)
            kl_val = masked_mean(kl_tokens, mask)
            per_token = per_token + al.kl_coef * kl_tokens
        ent_tokens = entropy_from_logits(logits.detach() if al.entropy_coef == 0 else logits)
        ent = masked_mean(ent_tokens, mask)
        if al.entropy_coef:
            per_token = per_token - al.entropy_coef * ent_tokens
        norm = al.loss_scale_factor or self.cfg.rollout.max_new_tokens
        micro_share(per_token, mask, al.loss_agg_mode, whole, norm=norm).backward()
        w = float(mask.sum().item())
        return {
            "weight": w,
            "actor/pg_loss": float(pl.loss.item()),
            "actor/kl": float(kl_val.item()),
            "actor/entropy": float(ent.item()),
            "actor/clip_frac": float(pl.clip_frac.item()),
            "actor/clip_frac_lower": float(pl.clip_frac_lower.item()),
            "actor/approx_kl": float(pl.approx_kl.item()),
            **found,
        }
