"""What the actor and the critic share: a Hugging Face model one rank trains, wrapped by the
strategy (``actor.strategy``: replicated | ddp | fsdp, one per model), its AdamW optimizer from the
device plugin, the padded batch of rollouts, the loop of epochs, mini-batches and accumulating
micro-batches, gradient clipping, and saving (Hugging Face weights plus what resuming needs).

:class:`rlport.train.models.actor.Actor` and :class:`rlport.train.models.critic.Critic` subclass
:class:`TrainedModel` and add what they compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlport.train.algos.loss_agg import MiniBatchSize, global_sizes
from rlport.train.config.schema import TrainConfig, UpdateConfig
from rlport.train.data.batch import Sample
from rlport.train.models.micro_batches import even_chunks, token_budget_chunks
from rlport.train.strategies import Strategy, build, unwrap


@dataclass(frozen=True)
class Optim:
    """The optimizer settings of one model (``actor.*`` or ``critic.*``)."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    epochs: int
    mini_batches: int
    micro_batch_size: int
    token_budget: int = 0  # use_dynamic_bsz: tokens per micro-batch instead of micro_batch_size

    @classmethod
    def of(cls, section: UpdateConfig, mini_batches: int) -> Optim:
        """The settings of ``section`` (``cfg.actor`` or ``cfg.critic``) with ``mini_batches``."""
        return cls(
            lr=section.lr,
            betas=(section.betas[0], section.betas[1]),
            weight_decay=section.weight_decay,
            grad_clip=section.grad_clip,
            epochs=section.ppo_epochs,
            mini_batches=mini_batches,
            micro_batch_size=section.micro_batch_size,
            token_budget=section.ppo_max_token_len_per_gpu if section.use_dynamic_bsz else 0,
        )


class TrainedModel:
    """A model of one rank (``rank`` of ``world``), its strategy and its optimizer."""

    cfg: TrainConfig
    rank: int
    world: int
    device: str
    config: Any
    strategy: Strategy
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    optimizer_name: str
    optimizer_plugin: str
    optim: Optim
    scheduler: torch.optim.lr_scheduler.LambdaLR

    def _train_on_strategy(
        self,
        module: torch.nn.Module,
        strategy: str,
        *,
        path: str,
        rt: Any,
        section: UpdateConfig,
        mini_batches: int,
        resume_from: str | Path | None,
        updates_done: int = 0,
    ) -> None:
        """Wrap ``module`` with ``strategy``, build its optimizer and learning-rate schedule with
        the settings of ``section`` (``cfg.actor`` or ``cfg.critic``, gradient checkpointing
        included) and, with ``resume_from``, restore the optimizer state (and a sharded strategy's
        shards) from there; the schedule continues after ``updates_done`` earlier updates."""
        from rlport.train.models.schedule import lr_schedule

        self.config = module.config
        self.optim = optim = Optim.of(section, mini_batches)
        if section.gradient_checkpointing:
            no_reentrant = {"use_reentrant": False}
            if hasattr(module, "activation_checkpointing_enable"):  # transformers 5.25: the new name
                module.activation_checkpointing_enable(activation_checkpointing_kwargs=no_reentrant)
            else:  # gradient_checkpointing_enable: deprecated there, gone in v6
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=no_reentrant)
        cfg = self.cfg
        self.strategy = build(
            strategy,
            world=self.world,
            device_type=torch.device(self.device).type,
            fsdp=section.fsdp_config,  # the actor's or the critic's own
            megatron=cfg.actor.megatron,
            path=path,
            backend=rt.collectives_backend,
        )
        self.model = self.strategy.wrap(module)
        self.model.train()
        factory, self.optimizer_plugin = rt.optimizer_factory("adamw", strategy)
        self.optimizer_name = repr(factory)
        self.optimizer = factory(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=optim.lr,
            betas=optim.betas,
            weight_decay=optim.weight_decay,
        )
        if resume_from:
            self.strategy.load_training_state(self.model, self.optimizer, Path(resume_from))
        self.scheduler = lr_schedule(
            self.optimizer, section.lr_schedule, lr=optim.lr, total_steps=cfg.trainer.steps, done=updates_done
        )

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
            self._write_model(out, state)

    def _write_model(self, out: Path, state: dict[str, torch.Tensor]) -> None:
        """Rank 0 writes the model's full ``state`` into ``out`` in Hugging Face format."""
        self.module.save_pretrained(out, state_dict=state)

    @torch.no_grad()
    def checksums(self) -> dict[str, float]:
        """A cheap fingerprint of each full weight, its float64 sum (ranks must agree after every
        step)."""
        return {name: float(p.double().sum().item()) for name, p in self.full_parameters()}

    # -- forward ------------------------------------------------------------------------------------
    def _batch(
        self, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``prompt + response`` ids, attention mask, the positions whose outputs
        predict (or value the state before) each response token, the response tokens and their mask."""
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

    def _response_outputs(
        self, model: Any, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's ``logits`` at the positions of :meth:`_batch`, the tokens and their mask."""
        ids, attn, pos, tokens, mask = self._batch(samples)
        logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
        rows = torch.arange(len(samples), device=logits.device).unsqueeze(1)
        return logits[rows, pos], tokens, mask

    def _split(self, samples: list[Sample]) -> list[list[int]]:
        """Positions of ``samples`` in micro-batches: ``micro_batch_size`` at a time, or by
        ``ppo_max_token_len_per_gpu`` with ``use_dynamic_bsz``."""
        o = self.optim
        if not o.token_budget:
            k = o.micro_batch_size
            return [list(range(i, min(i + k, len(samples)))) for i in range(0, len(samples), k)]
        lengths = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
        chunks = token_budget_chunks(lengths, o.token_budget)
        ranks, group = self.strategy.data_parallel()
        if self.strategy.lockstep_forward and ranks > 1:  # as many forwards on every rank
            import torch.distributed as dist

            most = torch.tensor([len(chunks)], dtype=torch.int64, device=self.device)
            dist.all_reduce(most, op=dist.ReduceOp.MAX, group=group)
            chunks = even_chunks(chunks, int(most.item()))
        return chunks

    def _chunks(self, samples: list[Sample]) -> list[list[Sample]]:
        return [[samples[i] for i in idx] for idx in self._split(samples)]

    # -- update -------------------------------------------------------------------------------------
    def _updates(
        self,
        samples: list[Sample],
        micro_step: Callable[[list[Sample], list[int], MiniBatchSize], dict[str, float]],
        *,
        prefix: str,
        seed: int,
        loss_tokens: list[int] | None = None,
    ) -> dict[str, float]:
        """``optim.epochs`` passes of ``optim.mini_batches`` optimizer steps over ``samples``,
        micro-batches (:meth:`_split`) accumulating gradients, then one step of the learning-rate
        schedule. ``micro_step(chunk, indices, mini_batch_size)`` runs a micro-batch's forward and
        backward (of its :func:`~rlport.train.algos.loss_agg.micro_share`) and returns its loss terms and its ``weight``
        (tokens); ``mini_batch_size`` counts the mini-batch over all data-parallel ranks
        (:func:`~rlport.train.algos.loss_agg.global_sizes`, one all-reduce per update, so every rank
        must have as many mini-batches). The result holds their token-weighted means and ``PREFIX/grad_norm``,
        ``PREFIX/updates``, ``PREFIX/lr`` (the rate these updates used). ``loss_tokens`` are
        the tokens of each sample that count in the loss (rollout correction's rejection takes
        some out); None: all of its response."""
        o = self.optim
        sums: dict[str, float] = {}
        weights = 0.0
        grad_norms: list[float] = []
        plan = self._mini_batches(len(samples), seed)
        ranks, group = self.strategy.data_parallel()
        sizes = global_sizes(
            [[len(samples[i].response_ids) for i in mb] for mb in plan],
            ranks=ranks,
            group=group,
            device=self.device,
            loss_tokens=None if loss_tokens is None else [[loss_tokens[i] for i in mb] for mb in plan],
        )
        for mb, whole in zip(plan, sizes, strict=True):
            self.optimizer.zero_grad(set_to_none=True)
            micro = [[mb[j] for j in part] for part in self._split([samples[i] for i in mb])]
            for k, idx in enumerate(micro):
                with self.strategy.accumulate(self.model, last=k == len(micro) - 1):
                    stats = micro_step([samples[i] for i in idx], idx, whole)
                w = stats.pop("weight")
                weights += w
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value * w
            self.strategy.reduce(self.model)
            grad_norms.append(self._clip(o.grad_clip))
            self.optimizer.step()
        out = {k: v / max(1.0, weights) for k, v in sums.items()}
        out[f"{prefix}/grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        out[f"{prefix}/updates"] = float(len(grad_norms))
        out[f"{prefix}/lr"] = float(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        return out

    def _mini_batches(self, count: int, seed: int) -> list[list[int]]:
        """The positions of ``count`` samples in each mini-batch of the update, in order:
        ``optim.epochs`` passes of ``optim.mini_batches``, shuffled by ``seed`` when there are
        several per pass."""
        o = self.optim
        order = list(range(count))
        gen = torch.Generator().manual_seed(seed)
        plan = []
        for _epoch in range(o.epochs):
            if o.mini_batches > 1:
                order = torch.randperm(count, generator=gen).tolist()
            size = max(1, math.ceil(count / o.mini_batches))
            plan.extend(order[start : start + size] for start in range(0, count, size))
        return plan

    def _clip(self, grad_clip: float) -> float:
        """Clip the global gradient norm (over the shards too: DTensor gradients give the full
        norm) and return it."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm.item())
