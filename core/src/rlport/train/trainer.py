"""The single controller of a GRPO run.

The driver reads the data, starts the workers (in this process, or as Ray actors for
``trainer.workers > 1``), and for each step: hands every worker its share of the prompts (rollout),
decodes and scores the responses and computes group-relative advantages (reward), has every worker
train on its share (sleep, logprobs, update with gradients all-reduced, weight sync, wake), then
logs the step, draws the progress bar and saves checkpoints. Every phase is timed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlport
from rlport._version import __version__
from rlport.errors import ConfigError
from rlport.rollout.protocol import SamplingParams
from rlport.rollout.seeding import step_seed
from rlport.train.batching import generate_calls
from rlport.train.batching import shards as split
from rlport.train.checkpoint import OPTIMIZER_FILE, TrainerState, checkpoint_dir, read_state, write_state
from rlport.train.config import TrainConfig, resolve
from rlport.train.data import Example, Sampler, read_parquet, tokenize
from rlport.train.evaluate import greedy_params, validate_policy
from rlport.train.loggers import open_loggers
from rlport.train.metrics import MetricsLog, plot_rewards, read_jsonl, step_line, val_line
from rlport.train.rewards import RewardManager
from rlport.train.validate import validate


@dataclass
class TrainResult:
    output_dir: Path
    metrics_path: Path
    plot_path: Path
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)


class _Pool:
    """The workers, behind one interface whether they are local objects or Ray actors."""

    def __init__(self, cfg: TrainConfig, actor_path: str, optimizer_state: str | None, rt: Any) -> None:
        self.world = cfg.trainer.workers
        self.ray = self.world > 1
        if not self.ray:
            from rlport.train.workers import Worker

            worker = Worker(cfg, actor_path=actor_path, optimizer_state=optimizer_state)
            worker.build()
            self.workers: list[Any] = [worker]
            return
        import ray

        from rlport.train.workers import ray_worker_class

        t = cfg.trainer
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if t.ray_address:
                kwargs["address"] = t.ray_address
            else:
                kwargs["num_cpus"] = t.ray_num_cpus or os.cpu_count() or 1
            ray.init(**kwargs)
            self._started_ray = True
        else:
            self._started_ray = False
        env = {k: v for k, v in os.environ.items() if k.startswith("RLPORT_")}
        env.update({k: v for k, v in rt.worker_env.items() if k not in env})
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        options: dict[str, Any] = {"num_cpus": t.cpus_per_worker, "runtime_env": {"env_vars": env}}
        resource = rt.device.ray_resource
        if resource == "GPU":
            options["num_gpus"] = 1
        elif resource:
            options["resources"] = {resource: 1}
        cls = ray_worker_class().options(**options)
        self.workers = [
            cls.remote(cfg, rank=r, world=self.world, actor_path=actor_path, optimizer_state=optimizer_state)
            for r in range(self.world)
        ]
        # Rank 0's node hosts the rendezvous (it may be another machine of the cluster).
        init_method = ray.get(self.workers[0].rendezvous_address.remote())
        ray.get([w.join_group.remote(init_method) for w in self.workers])
        ray.get([w.build.remote() for w in self.workers])  # sharded strategies need the group

    def call(self, method: str, args_per_worker: list[tuple[Any, ...]] | None = None) -> list[Any]:
        args_per_worker = args_per_worker or [() for _ in self.workers]
        if not self.ray:
            return [getattr(w, method)(*a) for w, a in zip(self.workers, args_per_worker, strict=True)]
        import ray

        return ray.get(
            [getattr(w, method).remote(*a) for w, a in zip(self.workers, args_per_worker, strict=True)]
        )

    def close(self) -> None:
        try:
            self.call("shutdown")
        finally:
            if self.ray:
                import ray

                for w in self.workers:
                    ray.kill(w)
                if self._started_ray:
                    ray.shutdown()


def plan_steps(cfg: TrainConfig, prompts: int, dropped: int, val_prompts: int) -> None:
    """Check the batch against the data and set ``trainer.steps`` from ``total_training_steps`` or
    ``total_epochs`` (a step takes ``train_batch_size`` prompts; an epoch is ``prompts //
    train_batch_size`` steps)."""
    d, t = cfg.data, cfg.trainer
    if d.train_batch_size > prompts:
        fit = t.workers * max(1, prompts // t.workers)
        raise ConfigError(
            f"data.train_batch_size={d.train_batch_size} is larger than the training data: {prompts} prompts"
            + (f" ({dropped} more were dropped as longer than data.max_prompt_length)" if dropped else ""),
            f"rlport train data.train_batch_size={fit} (or add prompts to data.train_files)",
        )
    if val_prompts and val_prompts < t.workers:
        raise ConfigError(
            f"data.val_files hold {val_prompts} prompts, fewer than trainer.workers={t.workers}",
            f"give at least {t.workers} validation prompts, or rlport train trainer.workers={val_prompts}",
        )
    if (t.test_freq or t.val_before_train) and not d.val_files:
        raise ConfigError(
            "trainer.test_freq / trainer.val_before_train ask for validation, but data.val_files is empty",
            "rlport train data.val_files=[test.parquet] (or trainer.test_freq=0 trainer.val_before_train=false)",
        )
    if t.total_training_steps:
        t.steps = t.total_training_steps
    elif t.total_epochs:
        t.steps = t.total_epochs * (prompts // d.train_batch_size)


class Trainer:
    """Runs ``cfg`` to the end: ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: TrainConfig, *, console: Any = None) -> None:
        from rlport.console import make_console

        resolve(cfg)
        self.cfg = cfg
        self.console = console or make_console(stderr=True)
        self.rt = rlport.init()
        # Everything that can fail on a user's input fails here, before any model is loaded.
        validate(cfg, self.rt)
        from rlport.train.modeling import load_tokenizer, stop_token_ids

        self.tokenizer = load_tokenizer(cfg.model.path)
        self.stop_ids = stop_token_ids(self.tokenizer, cfg.model.path)
        self.rewards = RewardManager.from_config(cfg.reward)
        examples = read_parquet(cfg.data.train_files, cfg.data.prompt_key)
        self.rewards.check_sources({e.data_source for e in examples})
        self.examples, self.dropped = tokenize(examples, self.tokenizer, cfg.data.max_prompt_length)
        self.val_examples: list[Example] = []
        if cfg.data.val_files:
            val = read_parquet(cfg.data.val_files, cfg.data.prompt_key, key="data.val_files")
            self.rewards.check_sources({e.data_source for e in val})
            self.val_examples, _ = tokenize(val, self.tokenizer, cfg.data.max_prompt_length)
        longest = max(len(e.prompt_ids) for e in [*self.examples, *self.val_examples])
        if longest + cfg.rollout.max_new_tokens > cfg.rollout.max_model_len:
            raise ConfigError(
                f"rollout.max_model_len={cfg.rollout.max_model_len} is below the longest prompt ({longest} tokens) "
                f"plus rollout.max_new_tokens={cfg.rollout.max_new_tokens}",
                f"rlport train rollout.max_model_len={longest + cfg.rollout.max_new_tokens}",
            )
        plan_steps(cfg, len(self.examples), self.dropped, len(self.val_examples))
        self.sampler = Sampler(
            len(self.examples), cfg.data.train_batch_size, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed
        )
        self.start_step = 0
        self.actor_path = cfg.model.path
        self.optimizer_state: str | None = None
        if cfg.trainer.resume_from:
            state = read_state(cfg.trainer.resume_from)
            self.start_step = state.step
            self.sampler.restore(state.sampler)
            self.actor_path = cfg.trainer.resume_from
            opt = Path(cfg.trainer.resume_from) / OPTIMIZER_FILE
            self.optimizer_state = str(opt) if opt.is_file() else None
        if self.start_step >= cfg.trainer.steps:
            raise ConfigError(
                f"trainer.resume_from is at step {self.start_step}, and trainer.steps={cfg.trainer.steps} leaves nothing to do",
                f"rlport train trainer.steps={self.start_step + 1} (or more) trainer.resume_from={cfg.trainer.resume_from}",
            )
        self.out = Path(cfg.trainer.output_dir).expanduser()
        self.metrics_path = self.out / "metrics.jsonl"
        self.plot_path = self.out / "reward_curve.png"

    # -- one step ----------------------------------------------------------------------------------
    def _sampling(self, step: int) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(
            n=r.n,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop_token_ids=self.stop_ids,
            seed=step_seed(self.cfg.trainer.seed, step),
        )

    def rollout_calls(
        self, shards: list[list[Example]], step: int
    ) -> list[tuple[list[list[int]], SamplingParams]]:
        """Each worker's ``generate`` arguments for ``step`` (:func:`rlport.train.batching.generate_calls`)."""
        return generate_calls(shards, self._sampling(step))

    def step(self, pool: _Pool, step: int) -> dict[str, Any]:
        from rlport.train.actor import Sample
        from rlport.train.grpo import group_advantages

        cfg = self.cfg
        t_step = time.perf_counter()
        batch: list[Example] = [self.examples[i] for i in self.sampler.next_batch()]
        shards = split(batch, pool.world)

        t = time.perf_counter()
        outs = pool.call("generate", self.rollout_calls(shards, step))
        t_rollout = time.perf_counter() - t

        t = time.perf_counter()
        per_worker: list[list[Sample]] = []
        rewards: list[float] = []
        group_ids: list[int] = []
        lengths: list[int] = []
        for w, (shard, (groups, _)) in enumerate(zip(shards, outs, strict=True)):
            samples = []
            for j, (ex, group) in enumerate(zip(shard, groups, strict=True)):
                for token_ids, logprobs, _finish in group:
                    text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                    rewards.append(self.rewards.score(ex.data_source, text, ex.ground_truth, ex.extra_info))
                    group_ids.append(w * 1_000_000 + j)
                    lengths.append(len(token_ids))
                    samples.append(Sample(ex.prompt_ids, token_ids, logprobs))
            per_worker.append(samples)
        al = cfg.algorithm
        adv = group_advantages(
            rewards, group_ids, epsilon=al.adv_epsilon, norm_by_std=al.norm_adv_by_std
        ).tolist()
        k = 0
        for samples in per_worker:
            for s in samples:
                s.advantage = adv[k]
                k += 1
        t_reward = time.perf_counter() - t

        t = time.perf_counter()
        stats = pool.call("train", [(samples,) for samples in per_worker])
        t_train = time.perf_counter() - t
        t_total = time.perf_counter() - t_step

        import statistics

        gen_tokens = sum(lengths)
        prompt_tokens = sum(len(e.prompt_ids) for e in batch) * cfg.rollout.n
        m: dict[str, Any] = {"step": step + 1}
        m["reward/mean"] = statistics.fmean(rewards)
        m["reward/std"] = statistics.pstdev(rewards)
        m["reward/max"] = max(rewards)
        m["reward/min"] = min(rewards)
        n_groups = len(set(group_ids))
        flat = sum(
            1
            for g in set(group_ids)
            if len({r for r, i in zip(rewards, group_ids, strict=True) if i == g}) == 1
        )
        m["reward/groups_without_signal"] = flat / n_groups
        for key in stats[0]:
            m[key] = statistics.fmean(s[key] for s in stats)
        for key in ("time/sleep", "time/logprob", "time/update", "time/sync"):
            m[key] = max(s[key] for s in stats)  # ranks run in parallel: the slowest decides
        m["time/generate"] = max(o[1]["time/generate"] for o in outs)
        m["time/rollout"] = t_rollout
        m["time/reward"] = t_reward
        m["time/train"] = t_train
        m["time/step"] = t_total
        compute = m["time/generate"] + m["time/logprob"] + m["time/update"]
        m["perf/overhead_share"] = max(0.0, t_total - compute) / t_total
        m["response/length_mean"] = gen_tokens / len(lengths)
        m["perf/rollout_tokens_per_s"] = gen_tokens / max(t_rollout, 1e-9)
        m["perf/tokens_per_s"] = (gen_tokens + prompt_tokens) / max(t_total, 1e-9)
        m["data/epoch"] = self.sampler.epoch
        return m

    # -- the run -----------------------------------------------------------------------------------
    def save(self, pool: _Pool, step: int) -> Path:
        folder = checkpoint_dir(self.out, step)
        pool.call("save", [(str(folder),)] * pool.world)  # every rank gathers; rank 0 writes
        state = TrainerState(
            step=step, sampler=self.sampler.state(), config=self.cfg.to_dict(), version=__version__
        )
        write_state(folder, state, self.tokenizer, self.cfg.model.path)
        return folder

    def validate(self, pool: _Pool, step: int) -> dict[str, Any]:
        """The greedy validation reward (overall and per data source) of the current policy."""
        t = time.perf_counter()
        params = greedy_params(
            self.cfg.rollout.max_new_tokens, self.stop_ids, step_seed(self.cfg.trainer.seed, step)
        )
        m = validate_policy(
            pool, self.val_examples, tokenizer=self.tokenizer, rewards=self.rewards, params=params
        )
        m["time/validate"] = time.perf_counter() - t
        return m

    def fit(self) -> TrainResult:
        cfg = self.cfg
        t = cfg.trainer
        steps = t.steps
        resume = self.start_step if t.resume_from else None
        log = MetricsLog(self.metrics_path, resume_step=resume) if "jsonl" in t.logger else None
        self.console.print(
            f"rlport train: {len(self.examples)} prompts ({self.dropped} dropped as too long), "
            f"model {cfg.model.path}, engine {cfg.rollout.engine}, {t.workers} worker(s), "
            f"steps {self.start_step + 1}..{steps}, output {self.out}",
            markup=False,
            highlight=False,
        )
        t0 = time.perf_counter()
        pool = _Pool(cfg, self.actor_path, self.optimizer_state, self.rt)
        loggers: list[Any] = []
        history: list[dict[str, Any]] = []
        validation: list[dict[str, Any]] = []
        last_ckpt: Path | None = None
        try:
            worker_info = pool.call("info")
            self.console.print(
                f"workers ready in {time.perf_counter() - t0:.2f}s: "
                + "; ".join(
                    f"rank {i['rank']} pid {i['pid']} {i['device']} attention={i['attn_implementation']} "
                    f"engine={i['engine']} sleep={','.join(i['engine_sleep_tags']) or 'none'} "
                    f"weights={i['weight_transport']} strategy={i['strategy']} optimizer={i['optimizer']}"
                    + (f" {i['collectives_backend']} preflight ok" if i["collectives_backend"] else "")
                    for i in worker_info
                ),
                markup=False,
                highlight=False,
            )
            loggers = open_loggers(
                t.logger,
                project=t.project_name,
                name=t.experiment_name or self.out.name,
                config=cfg.to_dict(),
                folder=self.out,
            )

            def record(m: dict[str, Any], line: str, progress: Any = None) -> None:
                if log is not None:
                    log.write(m)
                for logger in loggers:
                    logger.log(m, m["step"])
                if "console" in t.logger:
                    (progress.console if progress is not None else self.console).print(
                        line, markup=False, highlight=False
                    )

            if t.val_before_train and self.val_examples:
                v = {"step": self.start_step, **self.validate(pool, self.start_step)}
                validation.append(v)
                record(v, val_line(v, "before training"))
            with self._progress(steps) as (progress, task):
                for step in range(self.start_step, steps):
                    m = self.step(pool, step)
                    if pool.world > 1:
                        sums = pool.call("state_checksum")
                        m["workers/weights_in_sync"] = float(
                            max(sums) - min(sums) <= 1e-6 * max(1.0, abs(sums[0]))
                        )
                    line = step_line(m, steps)
                    if (
                        self.val_examples
                        and t.test_freq
                        and ((step + 1) % t.test_freq == 0 or step + 1 == steps)
                    ):
                        v = self.validate(pool, step + 1)
                        m.update(v)
                        validation.append({"step": step + 1, **v})
                        line += "\n" + val_line(m, f"at step {step + 1}")
                    record(m, line, progress)
                    history.append(m)
                    if progress is not None:
                        progress.update(task, advance=1, reward=m["reward/mean"])
                    if t.save_every and (step + 1) % t.save_every == 0 and step + 1 < steps:
                        last_ckpt = self.save(pool, step + 1)
                last_ckpt = self.save(pool, steps)
        finally:
            for logger in loggers:
                logger.close()
            pool.close()
        rows = read_jsonl(self.metrics_path) if log is not None else history
        plot_rewards(rows, self.plot_path, title=f"rlport train: {cfg.model.path}")
        self._report(history, last_ckpt)
        return TrainResult(
            self.out, self.metrics_path, self.plot_path, last_ckpt, history, worker_info, validation
        )

    def _progress(self, steps: int) -> Any:
        from contextlib import contextmanager

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        @contextmanager
        def cm() -> Any:
            if not self.cfg.trainer.progress:
                yield None, None
                return
            progress = Progress(
                TextColumn("[bold]GRPO"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("reward [cyan]{task.fields[reward]:.3f}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            with progress:
                task = progress.add_task("train", total=steps, completed=self.start_step, reward=float("nan"))
                yield progress, task

        return cm()

    def _report(self, history: list[dict[str, Any]], ckpt: Path | None) -> None:
        if not history:
            return
        k = min(5, len(history))
        first = sum(h["reward/mean"] for h in history[:k]) / k
        last = sum(h["reward/mean"] for h in history[-k:]) / k
        self.console.print(
            f"done: reward {first:.3f} (mean of first {k} steps) -> {last:.3f} (last {k}); "
            f"metrics {self.metrics_path}; curve {self.plot_path}; checkpoint {ckpt}",
            markup=False,
            highlight=False,
        )
