"""One data-parallel rank: its :class:`~rlport.train.models.actor.Actor` and its own rollout engine.

The driver (:mod:`rlport.train.driver.trainer`) is the single controller: it hands each worker its
prompts, scores the rollouts and sends back advantages. A worker runs the phases of a GRPO step
on its share, in order:

``generate`` — rollout on the engine (awake); the actor's weights sleep meanwhile when offloading.
``prepare`` — engine sleep → models wake → old (actor) and reference logprobs and the critic's
values, kept with the samples for ``train``; the values and the per-token KL go back to the
driver, which computes the advantages (:func:`rlport.train.algos.advantages.estimate`).
``train`` — each sample's advantages (and returns) attached → critic update → actor update (gradients averaged over the ranks by the strategy; skipped during
``trainer.critic_warmup_steps``) → weight sync into the engine → engine wakes.

A worker starts in two calls: construction (cheap), then :meth:`Worker.build` once the process
group is up (:meth:`Worker.join_group`), since sharded strategies need the group to build the
model. Everything device-specific goes through the runtime: the device (``rt.torch_device()``),
memory (``rt.tagged_memory()``), the process group (:func:`rlport.collectives.init_process_group`),
the engine (``rt.make_engine``), the weight transport and the training hooks. With
``trainer.workers > 1`` the same class runs as a Ray actor (:func:`ray_worker_class`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

import rlport
from rlport.errors import EngineError
from rlport.rollout.protocol import EngineConfig, SamplingParams
from rlport.train.checkpoint import read_state
from rlport.train.config.derive import offload_of
from rlport.train.config.schema import TrainConfig
from rlport.train.data.batch import Sample, attach
from rlport.train.loading import quiet_transformers
from rlport.train.models.actor import Actor, Logprobs
from rlport.types import EnginePlacement

__all__ = ["Worker", "ray_worker_class"]

#: what :meth:`Worker.prepare` keeps for :meth:`Worker.train`
Prepared = tuple[list[Sample], Logprobs, list[torch.Tensor] | None, dict[str, float]]


class Worker:
    """The actor and the engine of one rank, and the phases of a step."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        rank: int = 0,
        world: int = 1,
        actor_path: str,
        resume_from: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.actor_path, self.resume_from = actor_path, resume_from
        self._store: Any = None
        quiet_transformers()
        rt = rlport.init()
        rt.apply_allocator_settings("training")  # before the first model allocation of this process
        self.device = rt.use_device()  # the current device too: FSDP and bare-type tensors use it
        self.preflight: list[str] = []
        #: what prepare() computed for train(): the samples, their logprobs and values, the timings
        self._prepared: Prepared | None = None

    def build(self) -> None:
        """Load and wrap the actor, start the engine and resolve the weight transport."""
        rt = rlport.current()
        # what the models draw (a critic's new value head) is the same on every rank: replicas
        # start as one model, whatever the strategy broadcasts
        torch.manual_seed(self.cfg.trainer.seed)
        steps_done = read_state(self.resume_from).step if self.resume_from else 0
        ppo = self.cfg.algorithm.adv_estimator == "gae"
        # the first trainer.critic_warmup_steps steps of PPO update the critic only
        actor_updates = (
            steps_done - min(steps_done, self.cfg.trainer.critic_warmup_steps) if ppo else steps_done
        )
        self.actor = Actor(
            self.cfg,
            path=self.actor_path,
            device=self.device,
            rank=self.rank,
            world=self.world,
            rt=rt,
            resume_from=self.resume_from,
            updates_done=actor_updates,
        )
        self.critic = None
        if ppo:
            from rlport.train.checkpoint import CRITIC_DIR
            from rlport.train.models.critic import Critic

            saved = Path(self.resume_from) / CRITIC_DIR if self.resume_from else None
            if saved is not None and not saved.is_dir():
                saved = None  # a checkpoint of a run without a critic: the critic starts afresh
            self.critic = Critic(
                self.cfg,
                device=self.device,
                rank=self.rank,
                world=self.world,
                rt=rt,
                resume_from=saved,
                updates_done=steps_done if saved is not None else 0,
            )
        torch.manual_seed(self.cfg.trainer.seed + self.rank)  # each rank's own draws from here on
        m = self.cfg.model
        self.offload = offload_of(self.cfg, rt.device, self.world)
        self.memory = rt.tagged_memory()
        if self.offload:
            critic = self.critic.module if self.critic is not None else None
            models = (("actor", self.actor.module), ("reference", self.actor.reference), ("critic", critic))
            for tag, model in models:
                if model is not None:
                    _own_storage(model)
                    self.memory.register(tag, model)
        r = self.cfg.rollout
        self.engine = rt.make_engine(
            r.engine,
            EngineConfig(
                model=str(self.actor_path),
                device=self.device,
                dtype=m.dtype,
                seed=self.cfg.trainer.seed + self.rank,
                max_model_len=r.max_model_len,
                trust_remote_code=m.trust_remote_code,
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
        if m.lora_adapter_path and not self.resume_from:
            self.push_weights()  # the engine loaded model.path: the given adapters are not in it yet
        if self.offload:
            self.memory.sleep()

    # -- the process group ---------------------------------------------------------------------------
    def host_rendezvous(self) -> tuple[str, int]:
        """Rank 0: open the group's store on a port it keeps bound; ``(address, port)`` to give the
        other ranks (:mod:`rlport.train.workers.rendezvous`)."""
        from rlport.train.workers import rendezvous

        host = rendezvous.node_address()
        self._store = rendezvous.host_store(host, self.cfg.trainer.startup_timeout_s)
        return host, int(self._store.port)

    def join_group(self, host: str, port: int) -> list[str]:
        """Join rank 0's store, wait (bounded) for every rank, then start the data-parallel group on
        that store through the plugin's collectives (preflight included)."""
        from rlport.collectives import init_process_group
        from rlport.train.workers import rendezvous

        timeout = self.cfg.trainer.startup_timeout_s
        store = (
            self._store
            if self._store is not None
            else rendezvous.connect_store(host, port, self.rank, timeout)
        )
        rendezvous.wait_for_ranks(store, self.rank, self.world, timeout)
        results = init_process_group(self.rank, self.world, store=store)
        self.preflight = [f"{r.name}: {r.detail}" for r in results]
        return self.preflight

    # -- info ----------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Where this worker runs and what it resolved (cheap: before the model is built)."""
        from rlport.train.workers.rendezvous import node_address

        rt = rlport.current()
        return {
            "rank": self.rank,
            "pid": os.getpid(),
            "node": node_address(),
            "node_id": _ray_node_id(),
            "device_plugin": rt.device_plugin,
            "collectives_backend": rt.collectives_backend,
        }

    def info(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "device": self.device,
            "collectives_backend": rlport.current().collectives_backend if self.world > 1 else None,
            "preflight": self.preflight,
            "engine": self.engine_name,
            "engine_sleep_tags": list(self.sleep_tags),
            "weight_transport": self.transport.name,
            "strategy": self.actor.strategy.name,
            "lora": self.actor.lora_text(),
            "optimizer": f"{self.actor.optimizer_name} ({self.actor.optimizer_plugin})",
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
    def prepare(self, samples: list[Sample]) -> dict[str, Any]:
        """Sleep the engine, wake the models, and compute what the advantages need: the actor's
        and the reference's logprobs and the critic's values, kept with ``samples`` for
        :meth:`train`. Returns per sample the ``(R,)`` ``values`` (``None`` without a critic) and
        the ``(R,)`` per-token ``kl`` of the actor against the reference (``algorithm.kl_penalty``;
        ``None`` without KL in the reward)."""
        from rlport.train.algos.ppo import kl_penalty

        timings: dict[str, float] = {}
        t = time.perf_counter()
        if self.sleep_tags:
            self.engine.sleep(self.sleep_tags)
        if self.offload:
            self.memory.wake_up()
        timings["time/sleep"] = time.perf_counter() - t

        t = time.perf_counter()
        lp = self.actor.logprobs(samples)
        values = self.critic.values(samples) if self.critic is not None else None
        timings["time/logprob"] = time.perf_counter() - t
        self._prepared = (samples, lp, values, timings)
        al = self.cfg.algorithm
        kl = None
        if al.use_kl_in_reward:
            kl = [kl_penalty(old, ref, al.kl_penalty) for old, ref in zip(lp.old, lp.ref, strict=True)]  # type: ignore[arg-type]
        return {"values": values, "kl": kl}

    def train(
        self,
        advantages: list[torch.Tensor],
        returns: list[torch.Tensor] | None = None,
        update_actor: bool = True,
    ) -> dict[str, float]:
        """Update the critic (with one, towards ``returns``) and the actor (unless ``update_actor``
        is false: the critic's warm-up) on the samples :meth:`prepare` kept, each with its ``(R,)``
        ``advantages``; then sync the weights into the engine and wake it."""
        if self._prepared is None:
            raise RuntimeError(
                "Worker.train() before Worker.prepare(): the step's phases are generate, prepare, "
                "train (the driver runs them in that order)"
            )
        samples, lp, values, timings = self._prepared
        self._prepared = None
        attach(samples, advantages, returns)

        mismatch_num, n_tokens = 0.0, 0
        for raw, s in zip(lp.raw, samples if lp.raw else [], strict=True):  # none in bypass mode
            eng = torch.tensor(s.engine_logprobs[: raw.numel()], dtype=torch.float32)
            mismatch_num += float((raw[: eng.numel()] - eng).abs().sum())
            n_tokens += eng.numel()

        t = time.perf_counter()
        stats: dict[str, float] = {}
        if self.critic is not None and values is not None:
            stats.update(self.critic.update(samples, values))
        if update_actor:
            stats.update(self.actor.update(samples, lp))
        timings["time/update"] = time.perf_counter() - t
        stats.update(self.actor.throughput(samples, timings["time/update"]))

        t = time.perf_counter()
        self.sync_weights()
        timings["time/sync"] = time.perf_counter() - t
        if self.offload:
            self.memory.sleep()
        stats.update(timings)
        if lp.raw:  # bypass mode computes no logprobs to compare the engine's with
            stats["rollout/logprob_mismatch"] = mismatch_num / max(1, n_tokens)
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
        """The actor's full parameters (Hugging Face names) into the engine, one at a time from the
        strategy, through the transport resolved for it at start-up."""
        self.transport.send(self.engine, self.actor.full_parameters())

    # -- checkpoints ----------------------------------------------------------------------------------
    def save(self, folder: str) -> None:
        """Save the actor in Hugging Face format and the optimizer state into ``folder``, the
        critic the same way into ``folder/critic`` (every rank takes part; rank 0 writes)."""
        if self.offload:
            self.memory.wake_up()
        self.actor.save(folder)
        if self.critic is not None:
            from rlport.train.checkpoint import CRITIC_DIR

            self.critic.save(Path(folder) / CRITIC_DIR)
        if self.offload:
            self.memory.sleep()

    def state_checksums(self) -> dict[str, float]:
        """A cheap fingerprint of each weight, ``actor/NAME`` and ``critic/NAME`` (ranks must agree
        after every step: :func:`rlport.train.workers.group.first_drift`)."""
        if self.offload:
            self.memory.wake_up()
        sums = {f"actor/{n}": v for n, v in self.actor.checksums().items()}
        if self.critic is not None:
            sums.update((f"critic/{n}", v) for n, v in self.critic.checksums().items())
        if self.offload:
            self.memory.sleep()
        return sums

    def shutdown(self) -> None:
        try:
            engine = getattr(self, "engine", None)
            if engine is not None:
                engine.shutdown()
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


def _ray_node_id() -> str | None:
    """The Ray node this worker runs on (``None`` outside Ray)."""
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
    except Exception:
        return None


def ray_worker_class() -> Any:
    """:class:`Worker` as a Ray actor class (Ray imported only when workers > 1)."""
    import ray

    return ray.remote(Worker)
