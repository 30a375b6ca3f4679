"""One data-parallel rank: an actor (and frozen reference) and its own rollout engine.

The driver (:mod:`rlport.train.trainer`) is the single controller: it hands each worker its
prompts, scores the rollouts and sends back advantages. A worker runs the phases of a GRPO step
on its share, in order:

``generate`` — rollout on the engine (awake); the actor's weights sleep meanwhile when offloading.
``train`` — engine sleep → actor wakes → old (actor) and reference logprobs → update (gradients
all-reduced over the process group) → weight sync into the engine → engine wakes.

Everything device-specific goes through the runtime: the device (``rt.torch_device()``), memory
(``rt.tagged_memory()``), the process group (:func:`rlport.collectives.init_process_group`) and the
engine (``rt.make_engine``). With ``trainer.workers > 1`` the same class runs as a Ray actor
(:func:`ray_worker_class`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rlport
from rlport.errors import EngineError
from rlport.rollout.protocol import EngineConfig, SamplingParams
from rlport.train.config import TrainConfig
from rlport.train.grpo import clipped_policy_loss, entropy_from_logits, kl_k3, masked_mean, token_logprobs
from rlport.train.modeling import load_causal_lm, quiet_transformers
from rlport.types import EnginePlacement


@dataclass
class Sample:
    """One rollout as the worker trains on it."""

    prompt_ids: list[int]
    response_ids: list[int]
    engine_logprobs: list[float]
    advantage: float = 0.0


class Worker:
    """Actor, reference, optimizer and engine of one rank."""

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        rank: int = 0,
        world: int = 1,
        init_method: str | None = None,
        actor_path: str,
        optimizer_state: str | None = None,
    ) -> None:
        from rlport.train.config import load_config

        self.cfg: TrainConfig = load_config(base=_from_dict(cfg))
        self.rank, self.world = rank, world
        quiet_transformers()
        rt = rlport.init()
        rt.apply_allocator_settings("training")  # before the first model allocation of this process
        self.device = rt.torch_device()
        self.preflight: list[str] = []
        if world > 1 and init_method:
            self.join_group(init_method)
        torch.manual_seed(self.cfg.trainer.seed + rank)
        m = self.cfg.model
        self.actor = load_causal_lm(
            actor_path, dtype=m.dtype, attn_implementation=m.attn_implementation, device=self.device
        )
        self.actor.train()
        self.reference = None
        if self.cfg.algorithm.use_kl_loss:
            self.reference = load_causal_lm(
                m.path, dtype=m.dtype, attn_implementation=m.attn_implementation, device=self.device
            )
            self.reference.eval().requires_grad_(False)
        a = self.cfg.actor
        self.optimizer = torch.optim.AdamW(
            [p for p in self.actor.parameters() if p.requires_grad],
            lr=a.lr,
            betas=(a.betas[0], a.betas[1]),
            weight_decay=a.weight_decay,
        )
        if optimizer_state:
            self.optimizer.load_state_dict(
                torch.load(optimizer_state, map_location=self.device, weights_only=True)
            )
        self.offload = (
            self.cfg.actor.offload if self.cfg.actor.offload is not None else rt.device.device_type != "cpu"
        )
        self.memory = rt.tagged_memory()
        if self.offload:
            for tag, model in (("actor", self.actor), ("reference", self.reference)):
                if model is not None:
                    _own_storage(model)
                    self.memory.register(tag, model)
        r = self.cfg.rollout
        self.engine = rt.make_engine(
            r.engine,
            EngineConfig(
                model=str(actor_path),
                device=self.device,
                dtype=m.dtype,
                seed=self.cfg.trainer.seed + rank,
                max_model_len=r.max_model_len,
                options=dict(r.options),
            ),
        )
        caps = dict(getattr(self.engine, "capabilities", {}) or {})
        if not caps.get("update_weights", True):
            raise EngineError(
                f"rollout engine {r.engine!r} cannot take weight updates on this platform, so it would "
                "keep sampling from the initial model",
                "choose an engine that can: rollout.engine=hf",
            )
        self.sleep_tags: tuple[str, ...] = tuple(caps.get("sleep_tags", ())) if r.sleep else ()
        self.engine_name = r.engine
        placement = EnginePlacement(same_process=caps.get("weights_process", "trainer") != "worker")
        self.transport = rt.weight_transport(r.engine, placement)  # resolved once, used every step
        if self.offload:
            self.memory.sleep()

    # -- the process group ---------------------------------------------------------------------------
    def rendezvous_address(self) -> str:
        """``tcp://<this node's address>:<free port>``: rank 0 hosts the group's store here."""
        import socket

        try:
            import ray

            host = ray.util.get_node_ip_address()
        except Exception:  # not inside Ray
            host = "127.0.0.1"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        return f"tcp://{host}:{port}"

    def join_group(self, init_method: str) -> list[str]:
        """Join the data-parallel group through the plugin's collectives (preflight included)."""
        from rlport.collectives import init_process_group

        results = init_process_group(self.rank, self.world, init_method=init_method)
        self.preflight = [f"{r.name}: {r.detail}" for r in results]
        return self.preflight

    # -- info ----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        rt = rlport.current()
        return {
            "rank": self.rank,
            "pid": os.getpid(),
            "device": self.device,
            "device_plugin": rt.device_plugin,
            "collectives_backend": rt.collectives_backend if self.world > 1 else None,
            "preflight": self.preflight,
            "engine": self.engine_name,
            "engine_sleep_tags": list(self.sleep_tags),
            "weight_transport": self.transport.name,
            "attn_implementation": getattr(self.actor.config, "_attn_implementation", None),
            "offload": self.offload,
            "offloaded_bytes": self.memory.tagged_bytes() if self.offload else 0,
        }

    # -- rollout ------------------------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int]], params: SamplingParams
    ) -> tuple[list[list[Any]], dict[str, float]]:
        t0 = time.perf_counter()
        groups = self.engine.generate(prompts, params)
        dt = time.perf_counter() - t0
        out = [
            [(list(g.token_ids), [float(x) for x in g.logprobs], g.finish_reason) for g in group]
            for group in groups
        ]
        tokens = sum(len(g[0]) for group in out for g in group)
        return out, {"time/generate": dt, "rollout/tokens": float(tokens)}

    # -- training -----------------------------------------------------------------------------------
    def train(self, samples: list[Sample]) -> dict[str, float]:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        if self.sleep_tags:
            self.engine.sleep(self.sleep_tags)
        if self.offload:
            self.memory.wake_up()
        timings["time/sleep"] = time.perf_counter() - t

        t = time.perf_counter()
        old_logp, raw_logp, ref_logp, masks = self._logprobs(samples)
        timings["time/logprob"] = time.perf_counter() - t

        mismatch_num, n_tokens = 0.0, 0
        for raw, s in zip(raw_logp, samples, strict=True):
            eng = torch.tensor(s.engine_logprobs[: raw.numel()], dtype=torch.float32)
            mismatch_num += float((raw[: eng.numel()] - eng).abs().sum())
            n_tokens += eng.numel()

        t = time.perf_counter()
        stats = self._update(samples, old_logp, ref_logp)
        timings["time/update"] = time.perf_counter() - t

        t = time.perf_counter()
        self.sync_weights()
        timings["time/sync"] = time.perf_counter() - t
        if self.offload:
            self.memory.sleep()
        stats.update(timings)
        stats["rollout/logprob_mismatch"] = mismatch_num / max(1, n_tokens)
        stats["actor/lr"] = self.optimizer.param_groups[0]["lr"]
        del masks
        return stats

    def sync_weights(self) -> None:
        """Weights into the engine, then the engine is awake for the next rollout.

        The engine wakes before the update: an engine may refuse ``update_weights`` while any tag
        sleeps (the hf engine does). An engine that accepts updates with its KV cache asleep could
        wake ``weights`` first and the cache after, lowering the peak; see docs/train.md."""
        if self.sleep_tags:
            self.engine.wake_up(self.sleep_tags)
        self.push_weights()

    @torch.no_grad()
    def push_weights(self) -> None:
        """The actor's parameters (Hugging Face names) into the engine, through the transport
        resolved for it at start-up."""
        self.transport.send(self.engine, ((name, p.detach()) for name, p in self.actor.named_parameters()))

    def _batch(
        self, samples: list[Sample]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ``prompt + response`` ids, attention mask, the positions whose logits
        predict each response token, the response tokens and their mask."""
        pad = int(self.actor.config.pad_token_id or 0)
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
    def _logprobs(
        self, samples: list[Sample]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None], list[torch.Tensor]]:
        """Per sample: actor logprobs at the sampling temperature (the ratio's denominator), at
        temperature 1 (compared with the engine's), reference logprobs, and the response mask."""
        temp = self.cfg.rollout.temperature
        old, raw, ref, masks = [], [], [], []
        self.actor.eval()
        for chunk in self._micro(samples):
            logits, tokens, mask = self._response_logits(self.actor, chunk)
            lp_t = token_logprobs(logits, tokens, temp)
            lp_1 = lp_t if temp == 1.0 else token_logprobs(logits, tokens, 1.0)
            ref_lp = None
            if self.reference is not None:
                ref_logits, _, _ = self._response_logits(self.reference, chunk)
                ref_lp = token_logprobs(ref_logits, tokens, temp)
            for i, s in enumerate(chunk):
                n = len(s.response_ids)
                old.append(lp_t[i, :n].cpu())
                raw.append(lp_1[i, :n].cpu())
                ref.append(ref_lp[i, :n].cpu() if ref_lp is not None else None)
                masks.append(mask[i, :n].cpu())
        self.actor.train()
        return old, raw, ref, masks

    def _update(
        self, samples: list[Sample], old_logp: list[torch.Tensor], ref_logp: list[torch.Tensor | None]
    ) -> dict[str, float]:
        a, al = self.cfg.actor, self.cfg.algorithm
        temp = self.cfg.rollout.temperature
        sums: dict[str, float] = {
            "actor/pg_loss": 0.0,
            "actor/kl": 0.0,
            "actor/entropy": 0.0,
            "actor/clip_frac": 0.0,
            "actor/approx_kl": 0.0,
        }
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
                for k in range(0, len(mb), a.micro_batch_size):
                    idx = mb[k : k + a.micro_batch_size]
                    chunk = [samples[i] for i in idx]
                    logits, tokens, mask = self._response_logits(self.actor, chunk)
                    logp = token_logprobs(logits, tokens, temp)
                    old = _pad([old_logp[i] for i in idx], logp.shape, logp.device)
                    adv = torch.tensor([samples[i].advantage for i in idx], device=logp.device)
                    pl = clipped_policy_loss(
                        logp, old, adv, mask, clip_low=al.clip_ratio_low, clip_high=al.clip_ratio_high
                    )
                    loss = pl.loss
                    kl_val = torch.tensor(0.0)
                    if self.reference is not None:
                        ref = _pad([ref_logp[i] for i in idx], logp.shape, logp.device)  # type: ignore[misc]
                        kl_val = masked_mean(kl_k3(logp, ref), mask)
                        loss = loss + al.kl_coef * kl_val
                    ent = masked_mean(
                        entropy_from_logits(logits.detach() if al.entropy_coef == 0 else logits), mask
                    )
                    if al.entropy_coef:
                        loss = loss - al.entropy_coef * ent
                    share = float(mask.sum().item()) / max(1, mb_tokens)
                    (loss * share).backward()
                    w = float(mask.sum().item())
                    weights += w
                    sums["actor/pg_loss"] += float(pl.loss.item()) * w
                    sums["actor/kl"] += float(kl_val.item()) * w
                    sums["actor/entropy"] += float(ent.item()) * w
                    sums["actor/clip_frac"] += float(pl.clip_frac.item()) * w
                    sums["actor/approx_kl"] += float(pl.approx_kl.item()) * w
                self._all_reduce_grads()
                params = [p for p in self.actor.parameters() if p.grad is not None]
                max_norm = a.grad_clip if a.grad_clip > 0 else float("inf")
                grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm).item()))
                self.optimizer.step()
        out = {k: v / max(1.0, weights) for k, v in sums.items()}
        out["actor/grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
        out["actor/updates"] = float(len(grad_norms))
        return out

    def _all_reduce_grads(self) -> None:
        """Average gradients over the ranks, one flat buffer, through the plugin's backend."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = [p for p in self.actor.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    # -- checkpoints ----------------------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Save the actor in Hugging Face format and the optimizer state into ``folder``."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        if self.offload:
            self.memory.wake_up()
        self.actor.save_pretrained(folder)
        torch.save(self.optimizer.state_dict(), Path(folder) / "optimizer.pt")
        if self.offload:
            self.memory.sleep()

    def state_checksum(self) -> float:
        """A cheap fingerprint of the weights (ranks must agree after every step)."""
        if self.offload:
            self.memory.wake_up()
        with torch.no_grad():
            value = float(sum(p.double().sum().item() for p in self.actor.parameters()))
        if self.offload:
            self.memory.sleep()
        return value

    def shutdown(self) -> None:
        try:
            self.engine.shutdown()
        finally:
            if self.world > 1:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()


def _own_storage(model: torch.nn.Module) -> None:
    """Give every parameter and buffer its own resizable storage (weights loaded from safetensors
    are memory-mapped, and a mapped storage cannot be released by sleep)."""
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if not t.untyped_storage().resizable():
                t.data = t.data.clone()


def _pad(rows: list[torch.Tensor], shape: torch.Size, device: Any) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.float32, device=device)
    for i, row in enumerate(rows):
        out[i, : row.numel()] = row.to(device)
    return out


def _from_dict(d: dict[str, Any]) -> TrainConfig:
    from rlport.train.config import set_key

    cfg = TrainConfig()
    for section, body in d.items():
        set_key(cfg, section, body)
    return cfg


def ray_worker_class() -> Any:
    """:class:`Worker` as a Ray actor class (Ray imported only when workers > 1)."""
    import ray

    return ray.remote(Worker)
