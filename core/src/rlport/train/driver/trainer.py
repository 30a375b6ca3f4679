"""The single controller of a run (GRPO, or PPO with a critic).

The driver reads the data, starts the workers (in this process, or as Ray actors for
``trainer.workers > 1``), and for each step: hands every worker its share of the prompts (rollout),
decodes and scores the responses and computes the advantages (reward: GRPO's group-relative ones,
or, for PPO, GAE from the critic's values the workers return, with the KL penalty in the token
rewards when asked), has every worker
train on its share (sleep, logprobs, update with gradients all-reduced, weight sync, wake), then
logs the step, draws the progress bar and saves checkpoints. Every phase is timed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlport
from rlport._version import __version__
from rlport.errors import ConfigError, WorkerError
from rlport.rollout.protocol import SamplingParams
from rlport.rollout.seeding import step_seed
from rlport.train import checkpoint
from rlport.train.config.derive import derive, derive_for_device
from rlport.train.config.keys import example
from rlport.train.config.schema import TrainConfig
from rlport.train.data.prompts import Example, Sampler, limit, tokenize
from rlport.train.data.rewards import RewardManager
from rlport.train.data.sharding import shards as split
from rlport.train.driver.answers import rollout_and_score
from rlport.train.driver.batching import generate_calls
from rlport.train.driver.evaluate import Validation, logged_indices, validate_policy, validation_params
from rlport.train.driver.preflight import Inputs, check_inputs, validate
from rlport.train.tracking.loggers import open_loggers
from rlport.train.tracking.metrics import (
    MetricsLog,
    plot_rewards,
    read_jsonl,
    step_line,
    val_line,
    write_generations,
)
from rlport.train.tracking.timer import timed
from rlport.train.workers.group import WorkerGroup, first_drift


def _ranges(counts: list[int]) -> list[slice]:
    """Consecutive slices of a flat list holding ``counts[w]`` items for each worker ``w``."""
    out, start = [], 0
    for n in counts:
        out.append(slice(start, start + n))
        start += n
    return out


@dataclass
class TrainResult:
    output_dir: Path
    metrics_path: Path
    plot_path: Path
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)


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
    asked = [
        f"trainer.{k}={str(v).lower()}"
        for k in ("test_freq", "val_before_train", "val_only")
        if (v := getattr(t, k))
    ]
    if asked and not d.val_files:
        raise ConfigError(
            f"{' and '.join(asked)} ask for validation, but data.val_files is empty",
            "rlport train data.val_files=[test.parquet] (or "
            + " ".join(example(a.split("=")[0]) for a in asked)
            + ")",
        )
    if t.log_val_generations and not asked:
        raise ConfigError(
            f"trainer.log_val_generations={t.log_val_generations} logs validation answers, but no validation "
            "runs (trainer.test_freq=0, trainer.val_before_train=false, trainer.val_only=false)",
            "rlport train data.val_files=[test.parquet] trainer.test_freq=10 (or trainer.log_val_generations=0)",
        )
    if t.total_training_steps:
        t.steps = t.total_training_steps
    elif t.total_epochs:
        t.steps = t.total_epochs * (prompts // d.train_batch_size)


def algorithm_label(estimator: str) -> str:
    """The progress bar's name of the algorithm ``algorithm.adv_estimator`` runs."""
    names = {
        "gae": "PPO",
        "reinforce_plus_plus": "REINFORCE++",
        "reinforce_plus_plus_baseline": "REINFORCE++-baseline",
    }
    return names.get(estimator, estimator.replace("_", "-").upper())


class Trainer:
    """Runs ``cfg`` to the end: ``Trainer(cfg).fit()``."""

    def __init__(self, cfg: TrainConfig, *, console: Any = None, inputs: Inputs | None = None) -> None:
        """``inputs``: the data :func:`~rlport.train.driver.preflight.check_inputs` read (``rlport
        train`` reads it before the startup summary); read here when not given."""
        from rlport.console import make_console

        derive(cfg)  # idempotent: load_config derived it already; a hand-built config gets it here
        self.cfg = cfg
        self.console = console or make_console(stderr=True)
        # Everything that can fail on a user's input fails here, before any model is loaded.
        if inputs is None:
            inputs = check_inputs(cfg)
        self.rt = rlport.init()
        derive_for_device(cfg, self.rt.device)
        validate(cfg, self.rt)
        from rlport.train.loading import load_tokenizer, stop_token_ids

        self.tokenizer = load_tokenizer(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)
        self.stop_ids = stop_token_ids(self.tokenizer, cfg.model.path)
        self.rewards = RewardManager.from_config(cfg.reward)
        d = cfg.data
        template = dict(d.apply_chat_template_kwargs)
        examples = limit(inputs.train, d.train_max_samples, shuffle=d.shuffle, seed=cfg.trainer.seed)
        self.examples, self.dropped = tokenize(examples, self.tokenizer, d.max_prompt_length, template)
        self.val_examples: list[Example] = []
        if inputs.val:
            val = limit(inputs.val, d.val_max_samples, shuffle=d.shuffle, seed=cfg.trainer.seed)
            self.val_examples, _ = tokenize(val, self.tokenizer, d.max_prompt_length, template)
        longest = max(len(e.prompt_ids) for e in [*self.examples, *self.val_examples])
        if longest + cfg.rollout.max_new_tokens > cfg.rollout.max_model_len:
            raise ConfigError(
                f"rollout.max_model_len={cfg.rollout.max_model_len} is below the longest prompt ({longest} tokens) "
                f"plus rollout.max_new_tokens={cfg.rollout.max_new_tokens}",
                f"rlport train rollout.max_model_len={longest + cfg.rollout.max_new_tokens}",
            )
        plan_steps(cfg, len(self.examples), self.dropped, len(self.val_examples))
        self.log_indices = logged_indices(self.val_examples, cfg.trainer.log_val_generations)
        self.sampler = Sampler(
            len(self.examples), cfg.data.train_batch_size, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed
        )
        self.out = Path(cfg.trainer.output_dir).expanduser()
        for stale in checkpoint.stale_partials(self.out):
            self.console.print(
                f"note: ignoring {stale}: a checkpoint a run stopped writing (remove it: rm -r '{stale}')",
                markup=False,
                highlight=False,
            )
        self.start_step = 0
        self.actor_path = cfg.model.path
        self.resume_from = checkpoint.resolve_resume(cfg.trainer.resume_from, self.out)
        state: checkpoint.TrainerState | None = None
        if self.resume_from is not None:
            state = checkpoint.read_state(self.resume_from)
            self.start_step = state.step
            self.sampler.restore(state.sampler)
            self.actor_path = str(self.resume_from)
            self.console.print(
                f"resuming from {self.resume_from} (step {state.step}, data epoch "
                f"{state.sampler.get('epoch')} position {state.sampler.get('cursor')})",
                markup=False,
                highlight=False,
            )
        elif cfg.trainer.resume_from:
            self.console.print(
                f"trainer.resume_from={cfg.trainer.resume_from}: no complete checkpoint under "
                f"{checkpoint.checkpoints_root(self.out)} yet, starting at step 1",
                markup=False,
                highlight=False,
            )
        if self.start_step >= cfg.trainer.steps:
            raise ConfigError(
                f"trainer.resume_from is at step {self.start_step}, and trainer.steps={cfg.trainer.steps} leaves nothing to do",
                f"rlport train trainer.steps={self.start_step + 1} (or more) trainer.resume_from={cfg.trainer.resume_from}",
            )
        al = cfg.algorithm
        self.kl_ctrl = None
        if al.use_kl_in_reward:
            from rlport.train.algos.ppo import kl_controller

            k = al.kl_ctrl
            self.kl_ctrl = kl_controller(k.type, kl_coef=k.kl_coef, target_kl=k.target_kl, horizon=k.horizon)
            if state is not None and state.kl_coef is not None:
                self.kl_ctrl.value = state.kl_coef  # where the adaptive controller had moved it
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

    def _greedy_rewards(
        self, pool: WorkerGroup, shards: list[list[Example]], step: int, timings: dict[str, float]
    ) -> list[float]:
        """ReMax's baseline: the reward of one greedy answer to each prompt of the step, repeated
        for each of its ``rollout.n`` samples (in the order the samples are)."""
        from rlport.train.config.schema import ValKwargsConfig

        r = self.cfg.rollout
        params = validation_params(
            ValKwargsConfig(), r.max_new_tokens, self.stop_ids, step_seed(self.cfg.trainer.seed, step)
        )
        rolled = rollout_and_score(
            pool, shards, params, tokenizer=self.tokenizer, rewards=self.rewards, timings=timings
        )
        return [score for score in rolled.scores() for _ in range(r.n)]

    def rollout_calls(
        self, shards: list[list[Example]], step: int
    ) -> list[tuple[list[list[int]], SamplingParams]]:
        """Each worker's ``generate`` arguments for ``step`` (:func:`rlport.train.driver.batching.generate_calls`)."""
        return generate_calls(shards, self._sampling(step))

    def step(self, pool: WorkerGroup, step: int) -> dict[str, Any]:
        """One step, as named and timed phases (``time/<phase>``):

        - ``rollout``: every worker answers its share of the step's prompts (and, for ReMax, each
          prompt greedily once, while the engine is awake);
        - ``reward``: the answers decoded and scored, then the advantages
          (:func:`rlport.train.algos.advantages.estimate`) from the scores and what ``prepare``
          returned;
        - ``train``: the workers' ``prepare`` (engine sleeps; logprobs, values, KL) and ``train``
          (updates, weight sync, engine wakes).
        """
        from rlport.train.algos.advantages import estimate
        from rlport.train.data.batch import Sample

        cfg, al = self.cfg, self.cfg.algorithm
        timings: dict[str, float] = {}
        with timed("step", timings):
            batch: list[Example] = [self.examples[i] for i in self.sampler.next_batch()]
            shards = split(batch, pool.world)
            rolled = rollout_and_score(
                pool,
                shards,
                self._sampling(step),
                tokenizer=self.tokenizer,
                rewards=self.rewards,
                timings=timings,
            )
            baselines = (
                self._greedy_rewards(pool, shards, step, timings) if al.adv_estimator == "remax" else None
            )
            per_worker = [
                [Sample(a.example.prompt_ids, a.token_ids, a.logprobs) for group in prompts for a in group]
                for prompts in rolled.answers
            ]
            answers = [a for prompts in rolled.answers for group in prompts for a in group]
            # each prompt's group of rollout.n answers (the prompt's place in its worker's share)
            group_ids = [
                w * 1_000_000 + j
                for w, prompts in enumerate(rolled.answers)
                for j, g in enumerate(prompts)
                for _ in g
            ]
            lengths = [len(a.token_ids) for a in answers]
            rewards = [a.score for a in answers]
            with timed("train", timings):
                prepared = pool.call("prepare", [(samples,) for samples in per_worker])
            with timed("reward", timings):
                est = estimate(
                    al,
                    rewards,
                    lengths,
                    group_ids,
                    values=[v for p in prepared for v in p["values"]] if al.adv_estimator == "gae" else None,
                    kl=[k for p in prepared for k in p["kl"]] if al.use_kl_in_reward else None,
                    kl_ctrl=self.kl_ctrl,
                    baselines=baselines,
                )
            if cfg.trainer.rollout_data_dir:
                self._dump_rollouts(step, answers)
            update_actor = step >= cfg.trainer.critic_warmup_steps  # the warm-up trains the critic only
            calls = [
                (est.advantages[own], est.returns[own] if est.returns is not None else None, update_actor)
                for own in _ranges([len(samples) for samples in per_worker])
            ]
            with timed("train", timings):
                stats = pool.call("train", calls)
        return self._step_metrics(
            step, batch, rolled, rewards, group_ids, lengths, stats, est.metrics, timings
        )

    def _dump_rollouts(self, step: int, answers: list[Any]) -> None:
        """``trainer.rollout_data_dir``: every answer of the step, as verl dumps them."""
        rows = [
            {
                "input": self.tokenizer.decode(a.example.prompt_ids, skip_special_tokens=True),
                "output": a.text,
                "gts": a.example.ground_truth,
                "score": a.score,
            }
            for a in answers
        ]
        write_generations(self.cfg.trainer.rollout_data_dir, step + 1, rows)

    def _step_metrics(
        self,
        step: int,
        batch: list[Example],
        rolled: Any,
        rewards: list[float],
        group_ids: list[int],
        lengths: list[int],
        stats: list[dict[str, float]],
        extra: dict[str, float],
        timings: dict[str, float],
    ) -> dict[str, Any]:
        """The step's metrics: rewards, the workers' means (their phases: the slowest), the
        advantages' own, phase times and throughput."""
        gen_tokens = sum(lengths)
        prompt_tokens = sum(len(e.prompt_ids) for e in batch) * self.cfg.rollout.n
        m: dict[str, Any] = {"step": step + 1}
        m["reward/mean"] = statistics.fmean(rewards)
        m["reward/std"] = statistics.pstdev(rewards)
        m["reward/max"] = max(rewards)
        m["reward/min"] = min(rewards)
        groups: dict[int, set[float]] = {}
        for r, g in zip(rewards, group_ids, strict=True):
            groups.setdefault(g, set()).add(r)
        m["reward/groups_without_signal"] = sum(1 for scores in groups.values() if len(scores) == 1) / len(
            groups
        )
        for key in stats[0]:
            m[key] = statistics.fmean(s[key] for s in stats)
        m.update(extra)
        for key in ("time/sleep", "time/logprob", "time/update", "time/sync"):
            m[key] = max(s[key] for s in stats)  # ranks run in parallel: the slowest decides
        m["time/generate"] = rolled.generate_seconds
        for phase in ("rollout", "reward", "train", "step"):
            m[f"time/{phase}"] = timings[phase]
        t_total = timings["step"]
        compute = m["time/generate"] + m["time/logprob"] + m["time/update"]
        m["perf/overhead_share"] = max(0.0, t_total - compute) / t_total
        m["response/length_mean"] = gen_tokens / len(lengths)
        m["perf/rollout_tokens_per_s"] = gen_tokens / max(timings["rollout"], 1e-9)
        m["perf/tokens_per_s"] = (gen_tokens + prompt_tokens) / max(t_total, 1e-9)
        m["data/epoch"] = self.sampler.epoch
        return m

    # -- the run -----------------------------------------------------------------------------------
    def save(self, pool: WorkerGroup, step: int) -> Path:
        """Write the checkpoint of ``step`` aside and rename it into place once complete; then keep
        only the newest ``trainer.max_checkpoints_to_keep``."""
        with checkpoint.writing(self.out, step) as folder:
            pool.call("save", [(str(folder),)] * pool.world)  # every rank gathers; rank 0 writes
            state = checkpoint.TrainerState(
                step=step,
                sampler=self.sampler.state(),
                config=self.cfg.to_dict(),
                version=__version__,
                kl_coef=self.kl_ctrl.value if self.kl_ctrl is not None else None,
            )
            checkpoint.write_state(folder, state, self.tokenizer, self.cfg.model.path)
        checkpoint.prune(self.out, self.cfg.trainer.max_checkpoints_to_keep)
        return checkpoint.checkpoint_dir(self.out, step)

    def validate(self, pool: WorkerGroup, step: int) -> Validation:
        """The validation reward (overall and per data source) of the current policy, answered as
        ``rollout.val_kwargs`` says, and every answer."""
        t = time.perf_counter()
        r = self.cfg.rollout
        params = validation_params(
            r.val_kwargs, r.max_new_tokens, self.stop_ids, step_seed(self.cfg.trainer.seed, step)
        )
        v = validate_policy(
            pool,
            self.val_examples,
            tokenizer=self.tokenizer,
            rewards=self.rewards,
            params=params,
            batch_size=self.cfg.data.val_batch_size,
        )
        v.metrics["time/validate"] = time.perf_counter() - t
        return v

    def fit(self) -> TrainResult:
        cfg = self.cfg
        t = cfg.trainer
        steps = t.steps
        resume = self.start_step if self.resume_from is not None else None
        log = MetricsLog(self.metrics_path, resume_step=resume) if "jsonl" in t.logger else None
        answers = (
            MetricsLog(self.out / "val_generations.jsonl", resume_step=resume)
            if t.log_val_generations
            else None
        )
        self.console.print(
            f"rlport train: {len(self.examples)} prompts ({self.dropped} dropped as too long), "
            f"model {cfg.model.path}, engine {cfg.rollout.engine}, {t.workers} worker(s), "
            f"steps {self.start_step + 1}..{steps}, output {self.out}",
            markup=False,
            highlight=False,
        )
        t0 = time.perf_counter()
        pool = WorkerGroup(cfg, self.actor_path, str(self.resume_from) if self.resume_from else None, self.rt)
        loggers: list[Any] = []
        history: list[dict[str, Any]] = []
        validation: list[dict[str, Any]] = []
        last_ckpt: Path | None = None
        try:
            worker_info = pool.call("info")
            self.console.print(
                f"workers ready in {time.perf_counter() - t0:.2f}s: "
                + "; ".join(
                    f"rank {i['rank']} pid {i['pid']} on {i['node']} {i['device']} attention={i['attn_implementation']} "
                    f"engine={i['engine']} sleep={','.join(i['engine_sleep_tags']) or 'none'} "
                    f"weights={i['weight_transport']} strategy={i['strategy']} optimizer={i['optimizer']}"
                    + (f" {i['lora']}" if i.get("lora") else "")
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

            def validated(step: int) -> dict[str, Any]:
                """Validate at ``step``; the answers go to val_generations.jsonl and the loggers."""
                v = self.validate(pool, step)
                validation.append({"step": step, **v.metrics})
                if t.validation_data_dir:
                    rows = [
                        {
                            "input": s["prompt"],
                            "output": s["response"],
                            "gts": s["ground_truth"],  # as the data holds it, as verl dumps it
                            "score": s["score"],
                        }
                        for s in v.samples
                    ]
                    write_generations(t.validation_data_dir, step, rows)
                if answers is not None:
                    # the first answer of each logged prompt
                    logged = [s for s in v.samples if s["index"] in self.log_indices and s["sample"] == 0]
                    for sample in logged:
                        answers.write({"step": step, **sample})
                    for logger in loggers:
                        logger.log_samples(logged, step)
                return v.metrics

            if (t.val_before_train or t.val_only) and self.val_examples:
                v = {"step": self.start_step, **validated(self.start_step)}
                record(v, val_line(v, "before training" if not t.val_only else f"of step {self.start_step}"))
            if t.val_only:
                steps = self.start_step  # trainer.val_only: no step, no checkpoint
            with self._progress(steps) as (progress, task):
                for step in range(self.start_step, steps):
                    pool.step = step + 1  # named by a worker's failure
                    m = self.step(pool, step)
                    if pool.world > 1:
                        drift = first_drift(pool.call("state_checksums"))
                        if drift:
                            raise WorkerError(
                                f"after step {step + 1} the workers' weights differ, first at {drift}: "
                                "the replicas no longer train one model, so the run stops here",
                                "this is a defect in rlport or in the device plugin's collectives: "
                                "run `rlport conformance` for the plugin and report the message; "
                                "actor.strategy=ddp averages gradients with torch's own DDP",
                            )
                        m["workers/weights_in_sync"] = 1.0
                    line = step_line(m, steps)
                    if (
                        self.val_examples
                        and t.test_freq
                        and ((step + 1) % t.test_freq == 0 or step + 1 == steps)
                    ):
                        m.update(validated(step + 1))
                        line += "\n" + val_line(m, f"at step {step + 1}")
                    record(m, line, progress)
                    history.append(m)
                    if progress is not None:
                        progress.update(task, advance=1, reward=m["reward/mean"])
                    if t.save_every and (step + 1) % t.save_every == 0 and step + 1 < steps:
                        last_ckpt = self.save(pool, step + 1)
                if not t.val_only:
                    last_ckpt = self.save(pool, steps)
        finally:
            for logger in loggers:
                logger.close()
            pool.close()
        if t.val_only:
            self.console.print(
                f"done: validation only, reward {validation[0]['val/reward/mean']:.3f}; no step, no checkpoint"
                + (f"; metrics {self.metrics_path}" if log is not None else ""),
                markup=False,
                highlight=False,
            )
        else:
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
                TextColumn(algorithm_label(self.cfg.algorithm.adv_estimator), style="bold", markup=False),
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
