"""rlport's `rlport train --demo` against the same job run through TRL's ``GRPOTrainer``.

    pip install trl                                    # TRL is optional; without it this exits 2
    python benchmarks/bench_trl_grpo.py                # seed 0, the demo's trainer.steps (50)
    python benchmarks/bench_trl_grpo.py --seed 1 --steps 30
    python benchmarks/bench_trl_grpo.py --threads 2 --output-dir /tmp/bench-trl   # keep the runs

Each side runs as its own child process, one after the other, with the same seed and the same
thread count (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``--threads``, default: every core), so wall
time, CPU time (user + sys) and peak resident memory (max RSS) are each side's own (``os.wait4`` on
the child). The wall and CPU time include the process start, imports, building the tiny model and
the data, and the final checkpoint on both sides.

- rlport: ``python -m rlport.train --demo trainer.seed=S trainer.output_dir=TMP trainer.progress=false
  trainer.steps=N``; per-step reward and step time come from ``TMP/metrics.jsonl`` (``reward/mean``,
  ``time/step``).
- TRL: this script with ``--side trl``. It builds the demo's model and data with
  ``rlport.train.demo.prepare_demo`` / ``write_demo_data`` (same seed, so the same weights and the
  same parquet prompts in verl's layout), and trains with ``trl.GRPOTrainer``. Its settings come from
  rlport's demo configuration resolved at run time (rlport's defaults, then
  ``rlport.train.demo.DEMO_OVERRIDES``, through ``rlport.train.cli.build_config``), so the benchmark
  follows the demo when its settings change. The reward function calls rlport's own reward rule
  (``RewardManager.score``: ``repeat_letter_reward`` for the demo's data source) on the decoded
  completion, so both sides score identically. The per-round mean reward is recorded inside that
  reward function (TRL calls it once per generation round, on all its completions) and the round's
  time by a ``TrainerCallback``.

"Step" means the same on both sides: one generation round of ``data.train_batch_size`` (16) prompts x
``rollout.n`` samples, followed by its ``actor.mini_batches`` optimizer updates. TRL counts optimizer
updates (``global_step``), so TRL's ``max_steps`` = steps x mini_batches x ppo_epochs, and a round ends
at every multiple of mini_batches x ppo_epochs. "Steps to reward 0.9" is the first step whose mean
reward over the round's samples is >= 0.9; the mean and median step times leave out the first step
(warm-up). In the rlport/TRL column, above 1 means rlport takes more (time, memory, steps). The line
under the table gives the machine's load average around each side: other work on the same cores
(OpenMP threads contend) inflates wall time, CPU time and the mean step time; the median suffers least.

rlport setting (demo value when written)  TRL 1.x setting (values read from rlport at run time)
----------------------------------------  ----------------------------------------------------
data.train_batch_size (16) x rollout.n   generation batch = per_device_train_batch_size x
  (8) = 128 samples per step               steps_per_generation = 128; num_generations = rollout.n
actor.mini_batches (4)                   steps_per_generation = mini_batches x gradient_accumulation;
                                           per_device_train_batch_size = 128 / mini_batches (32)
actor.micro_batch_size (64)              gradient_accumulation_steps = ceil(32 / 64) = 1
actor.ppo_epochs (1)                     num_iterations
rollout.max_new_tokens (8)               max_completion_length
rollout.temperature / top_p / top_k      temperature / top_p / top_k (top_k 0: off on both)
actor.lr, constant schedule, no warm-up  learning_rate, lr_scheduler_type="constant", warmup 0
actor.betas / weight_decay (0.9,0.999/0) torch.optim.AdamW(betas, weight_decay, foreach=True) passed
                                           in (rlport's CPU optimizer: foreach, eps 1e-8)
actor.grad_clip (1.0)                    max_grad_norm
algorithm.clip_ratio_low / high         epsilon / epsilon_high
algorithm.use_kl_loss (false), kl_coef   beta = 0.0 (with use_kl_loss: beta = kl_coef; both use k3)
algorithm.entropy_coef (0)               entropy_coef
algorithm.norm_adv_by_std (true)         scale_rewards="group" (false: "none")
algorithm.loss_agg_mode (token-mean)     loss_type="bnpo" (token mean over the local batch, exact
                                           with gradient_accumulation_steps 1), else "dapo"
model.dtype (float32)                    the model loaded in float32; bf16=False, fp16=False
actor.gradient_checkpointing (false)     activation_checkpointing=False (gradient_checkpointing on older
                                           transformers; TRL's default is True)
trainer.seed                             seed (and the demo model/data seed)
data.shuffle (true)                      shuffle_dataset=True
trainer.steps (50)                       max_steps = steps x mini_batches x ppo_epochs
(host, no vLLM, no logging service)      use_cpu=True, use_vllm=False, report_to="none"
(final checkpoint)                       save_strategy="steps", save_steps=max_steps: one at the end

Not matched exactly:
- the random streams: both sides are seeded with the same seed, but rlport's engine samples by
  inverse CDF on per-sample seeded uniforms, TRL by ``model.generate`` on torch's global generator;
  the mini-batch shuffles differ too. The two reward curves are one sample each of the same process,
  not the same trajectory.
- the group-std epsilon: rlport's algorithm.adv_epsilon (1e-6) vs TRL's fixed 1e-4.
- attention: rlport's actor and engine use model.attn_implementation="rlport" (the device plugin's
  backend); TRL runs transformers' default attention.
- rollout: rlport's engine is its own batched decode loop; TRL uses ``model.generate``.
- data.max_prompt_length / rollout.max_model_len: TRL 1.x has no prompt-length filter (the demo's
  prompts are about 20 tokens, so neither side drops or cuts one).
- loss_agg_mode other than token-mean, seq-mean-token-mean ("grpo") or seq-mean-token-sum-norm
  ("dr_grpo"); adv_estimator other than grpo; policy_loss other than vanilla; clip_ratio_c; KL in the
  reward; LoRA; a non-constant learning-rate schedule (rlport steps it once per step, TRL once per
  optimizer update): the TRL side says so in the "not matched" notes it prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

THRESHOLD = 0.9
LAST = 5
TRL_MISSING = (
    "TRL is not installed: this benchmark runs the demo through trl.GRPOTrainer.\n"
    "Install it into this environment with:  pip install trl"
)


# -------------------------------------------------------------------------------------------------
# The TRL side (a child process: --side trl)
# -------------------------------------------------------------------------------------------------


def demo_config(seed: int, steps: int, output_dir: str) -> Any:
    """rlport's resolved demo configuration (its defaults, then DEMO_OVERRIDES, then these), as
    `rlport train --demo` builds it, without building the model yet."""
    from rlport.train.cli import build_config

    return build_config(
        [f"trainer.seed={seed}", f"trainer.steps={steps}", f"trainer.output_dir={output_dir}"],
        demo=True,
        prepare=False,
    )


def trl_plan(cfg: Any) -> tuple[dict[str, Any], list[str], int]:
    """GRPOConfig keyword arguments matched to ``cfg``, the settings that could not be matched,
    and the optimizer updates per generation round."""
    a, al, r, d = cfg.actor, cfg.algorithm, cfg.rollout, cfg.data
    notes: list[str] = []
    samples = d.train_batch_size * r.n
    mini_batches = a.mini_batches
    if a.ppo_mini_batch_size:
        mini_batches = max(1, d.train_batch_size // a.ppo_mini_batch_size)
    if samples % mini_batches:
        notes.append(f"{samples} samples per step do not split into {mini_batches} equal mini-batches")
    per_update = samples // mini_batches
    accumulation = max(1, math.ceil(per_update / a.micro_batch_size))
    if per_update % accumulation:
        accumulation = next(k for k in range(accumulation, per_update + 1) if per_update % k == 0)
        notes.append(
            f"micro-batches of {per_update // accumulation} instead of actor.micro_batch_size={a.micro_batch_size}"
        )
    per_device = per_update // accumulation

    if al.loss_agg_mode == "token-mean":
        loss_type = "bnpo" if accumulation == 1 else "dapo"
        if accumulation > 1:
            notes.append(
                "token-mean with gradient accumulation: TRL's dapo divides by the round's mean tokens per update"
            )
    elif al.loss_agg_mode == "seq-mean-token-mean":
        loss_type = "grpo"
    elif al.loss_agg_mode == "seq-mean-token-sum-norm":
        loss_type = "dr_grpo"
        if al.loss_scale_factor not in (0, r.max_new_tokens):
            notes.append(
                f"algorithm.loss_scale_factor={al.loss_scale_factor}: TRL's dr_grpo divides by max_completion_length"
            )
    else:
        loss_type = "bnpo"
        notes.append(
            f"algorithm.loss_agg_mode={al.loss_agg_mode} has no TRL loss_type; using bnpo (token-mean)"
        )
    if al.adv_estimator != "grpo":
        notes.append(f"algorithm.adv_estimator={al.adv_estimator}: TRL runs GRPO")
    if al.policy_loss != "vanilla":
        notes.append(f"algorithm.policy_loss={al.policy_loss}: TRL runs the clipped surrogate")
    if al.clip_ratio_c:
        notes.append(f"algorithm.clip_ratio_c={al.clip_ratio_c} (dual clip): not in TRL")
    if al.use_kl_in_reward:
        notes.append("algorithm.use_kl_in_reward: not in TRL")
    if cfg.model.lora_rank:
        notes.append("model.lora_rank: the TRL side trains every parameter")
    notes.append(f"group-std epsilon: rlport {al.adv_epsilon:g}, TRL 1e-4 (fixed)")
    notes.append(
        f"attention: rlport model.attn_implementation={cfg.model.attn_implementation}, TRL transformers' default"
    )
    notes.append("random streams: same seed, different generators (sampling and mini-batch shuffles differ)")
    notes.append(
        "no prompt-length filter in TRL (data.max_prompt_length): the demo's prompts are far below it"
    )

    sched = a.lr_schedule
    warmup = sched.warmup_steps or int(sched.warmup_steps_ratio * cfg.trainer.steps)
    updates = mini_batches * a.ppo_epochs
    if sched.type == "constant":
        lr_type = "constant_with_warmup" if warmup else "constant"
    else:
        lr_type = "cosine"
        notes.append("actor.lr_schedule cosine: TRL's cosine (min_lr_ratio, num_cycles not matched)")
    kwargs = dict(
        num_generations=r.n,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        steps_per_generation=mini_batches * accumulation,
        num_iterations=a.ppo_epochs,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        learning_rate=a.lr,
        lr_scheduler_type=lr_type,
        warmup_steps=warmup * updates,
        weight_decay=a.weight_decay,
        adam_beta1=a.betas[0],
        adam_beta2=a.betas[1],
        max_grad_norm=a.grad_clip,
        beta=al.kl_coef if al.use_kl_loss else 0.0,
        epsilon=al.clip_ratio_low,
        epsilon_high=al.clip_ratio_high,
        entropy_coef=al.entropy_coef,
        scale_rewards="group" if al.norm_adv_by_std else "none",
        loss_type=loss_type,
        mask_truncated_completions=False,
        shuffle_dataset=d.shuffle,
        gradient_checkpointing=a.gradient_checkpointing,
        max_steps=cfg.trainer.steps * updates,
        seed=cfg.trainer.seed,
    )
    return kwargs, notes, updates


def run_trl(args: argparse.Namespace) -> int:
    try:
        import trl
    except ImportError:
        print(TRL_MISSING, file=sys.stderr)
        return 2
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlport.train.data.rewards import RewardManager
    from rlport.train.demo import prepare_demo

    torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    cfg = demo_config(args.seed, args.steps, str(out))
    model_dir, train_file = prepare_demo(out, length=cfg.rollout.max_new_tokens, seed=cfg.trainer.seed)
    dataset = Dataset.from_list(pq.read_table(train_file).to_pylist())

    kwargs, notes, updates = trl_plan(cfg)
    if "activation_checkpointing" in GRPOConfig.__dataclass_fields__:  # the newer transformers name
        kwargs["activation_checkpointing"] = kwargs.pop("gradient_checkpointing")
    dtype = getattr(torch, cfg.model.dtype)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    a = cfg.actor
    # rlport's optimizer on the host: torch's AdamW on the foreach path, eps left at 1e-8
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=a.lr, betas=tuple(a.betas), weight_decay=a.weight_decay, foreach=True
    )
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        use_vllm=False,
        report_to="none",
        logging_steps=updates,
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=kwargs["max_steps"],
        dataloader_num_workers=0,
        log_completions=False,
        **kwargs,
    )

    manager = RewardManager.from_config(cfg.reward)
    rounds: list[dict[str, float]] = []

    def rlport_reward(prompts, completions, data_source, reward_model, extra_info, **_):
        """rlport's own reward rule on each decoded completion; records the round's mean."""
        scores = []
        rows = zip(completions, data_source, reward_model, extra_info, strict=True)
        for completion, source, rm, info in rows:
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            scores.append(manager.score(source, text, rm["ground_truth"], info))
        rounds.append({"reward": statistics.fmean(scores), "samples": len(scores)})
        return scores

    class RoundTimer(TrainerCallback):
        """The time of each generation round: from the first update's start to the last one's end."""

        def __init__(self) -> None:
            self.start = 0.0
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step % updates == 0:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % updates == 0:
                self.times.append(time.perf_counter() - self.start)

    timer = RoundTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rlport_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
        optimizers=(optimizer, None),
    )
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    logged = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    result = {
        "trl_version": trl.__version__,
        "rewards": [r["reward"] for r in rounds],
        "samples_per_round": sorted({r["samples"] for r in rounds}),
        "step_times": timer.times,
        "optimizer_steps": trainer.state.global_step,
        "train_s": train_s,
        "threads": torch.get_num_threads(),
        "optimizer": f"{type(optimizer).__name__} foreach={optimizer.defaults.get('foreach')}"
        f" (trainer's: {type(getattr(trainer.optimizer, 'optimizer', trainer.optimizer)).__name__})",
        "logged_rewards": logged,
        "settings": {k: v for k, v in kwargs.items()},
        "notes": notes,
    }
    Path(args.result).write_text(json.dumps(result))
    return 0


# -------------------------------------------------------------------------------------------------
# The parent: both sides, then the table
# -------------------------------------------------------------------------------------------------


def trl_installed() -> bool:
    try:
        return importlib.util.find_spec("trl") is not None
    except (ImportError, ValueError):  # a broken or blocked entry in sys.modules
        return False


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd`` with its output in ``log``; its wall time, CPU time and peak RSS (its own, by
    ``os.wait4``)."""
    load_before = os.getloadavg()[0]
    with log.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "rc": proc.returncode,
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "load": (load_before, os.getloadavg()[0]),
    }


def failed(side: str, run: dict[str, float], log: Path) -> int:
    tail = log.read_text(errors="replace").splitlines()[-40:]
    print(f"{side} side failed (exit {run['rc']}); the end of {log}:", file=sys.stderr)
    print("\n".join(tail), file=sys.stderr)
    return 2 if run["rc"] == 2 and side == "TRL" else 1


def reached(rewards: list[float]) -> int | None:
    return next((i + 1 for i, r in enumerate(rewards) if r >= THRESHOLD), None)


def summary(run: dict[str, float], rewards: list[float], step_times: list[float]) -> dict[str, Any]:
    timed = step_times[1:] if len(step_times) > 1 else step_times
    return {
        "wall": run["wall"],
        "cpu": run["cpu"],
        "step": statistics.fmean(timed) if timed else float("nan"),
        "median": statistics.median(timed) if timed else float("nan"),
        "rss": run["rss_mib"],
        "reach": reached(rewards),
        "last": statistics.fmean(rewards[-LAST:]) if rewards else float("nan"),
        "steps": len(rewards),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the demo's trainer.steps")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads on both sides"
    )
    parser.add_argument(
        "--output-dir", default=None, help="keep both runs here (default: a temporary folder)"
    )
    parser.add_argument("--side", choices=("trl",), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from rlport.train.demo import DEMO_OVERRIDES

    if args.steps is None:
        args.steps = int(DEMO_OVERRIDES.get("trainer.steps", 50))
    if args.side == "trl":
        return run_trl(args)

    if not trl_installed():
        print(TRL_MISSING, file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.table import Table

    console = Console()
    root = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="rlport-bench-trl-"))
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(root / "hf-datasets-cache"),
    )
    try:
        rl_dir = root / "rlport"
        shutil.rmtree(rl_dir, ignore_errors=True)
        rl_cmd = [
            sys.executable, "-m", "rlport.train", "--demo",
            f"trainer.seed={args.seed}", f"trainer.output_dir={rl_dir}", "trainer.progress=false",
            f"trainer.steps={args.steps}",
        ]  # fmt: skip
        console.print(f"rlport side: {' '.join(rl_cmd[1:])} (threads {args.threads})", highlight=False)
        rl_log = root / "rlport.log"
        rl_run = run_child(rl_cmd, env, rl_log)
        if rl_run["rc"]:
            return failed("rlport", rl_run, rl_log)
        lines = [json.loads(x) for x in (rl_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        steps = [x for x in lines if "reward/mean" in x]
        rl = summary(rl_run, [x["reward/mean"] for x in steps], [x["time/step"] for x in steps])

        trl_dir = root / "trl"
        shutil.rmtree(trl_dir, ignore_errors=True)
        result_path = root / "trl_result.json"
        trl_cmd = [
            sys.executable, str(Path(__file__).resolve()), "--side", "trl",
            "--seed", str(args.seed), "--steps", str(args.steps), "--threads", str(args.threads),
            "--output-dir", str(trl_dir), "--result", str(result_path),
        ]  # fmt: skip
        console.print(f"TRL side: {Path(trl_cmd[1]).name} {' '.join(trl_cmd[2:])}", highlight=False)
        trl_log = root / "trl.log"
        trl_run = run_child(trl_cmd, env, trl_log)
        if trl_run["rc"]:
            return failed("TRL", trl_run, trl_log)
        res = json.loads(result_path.read_text())
        tr = summary(trl_run, res["rewards"], res["step_times"])
    finally:
        if not args.output_dir:
            shutil.rmtree(root, ignore_errors=True)

    def ratio(a: float | None, b: float | None) -> str:
        if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
            return "-"
        return f"{a / b:.2f}x"

    def reach(x: int | None) -> str:
        return "never" if x is None else str(x)

    table = Table(
        title=f"rlport vs TRL {res['trl_version']} GRPO on the demo task: seed {args.seed}, "
        f"{args.steps} steps "
        f"(16 prompts x n samples each), {args.threads} thread(s)"
    )
    table.add_column("metric")
    table.add_column("rlport", justify="right")
    table.add_column("TRL", justify="right")
    table.add_column("rlport/TRL", justify="right")
    rows = [
        ("wall time (s, whole process)", rl["wall"], tr["wall"], "{:.1f}"),
        ("CPU time user+sys (s)", rl["cpu"], tr["cpu"], "{:.1f}"),
        ("mean step time after step 1 (s)", rl["step"], tr["step"], "{:.3f}"),
        ("median step time after step 1 (s)", rl["median"], tr["median"], "{:.3f}"),
        ("peak RSS (MiB)", rl["rss"], tr["rss"], "{:.0f}"),
    ]
    for name, a, b, fmt in rows:
        table.add_row(name, fmt.format(a), fmt.format(b), ratio(a, b))
    table.add_row(
        f"steps to reward {THRESHOLD}",
        reach(rl["reach"]),
        reach(tr["reach"]),
        ratio(rl["reach"], tr["reach"]) if rl["reach"] and tr["reach"] else "-",
    )
    table.add_row(
        f"final last-{LAST} mean reward",
        f"{rl['last']:.3f}",
        f"{tr['last']:.3f}",
        ratio(rl["last"], tr["last"]),
    )
    console.print(table)
    console.print(
        f"steps run: rlport {rl['steps']}, TRL {tr['steps']} ({res['optimizer_steps']} optimizer updates, "
        f"{res['samples_per_round']} samples per round); TRL threads {res['threads']}, "
        f"optimizer {res['optimizer']}",
        highlight=False,
    )
    console.print(
        f"machine load (1-min average, start -> end of each side, {os.cpu_count()} cores): "
        f"rlport {rl_run['load'][0]:.1f} -> {rl_run['load'][1]:.1f}, "
        f"TRL {trl_run['load'][0]:.1f} -> {trl_run['load'][1]:.1f}; other work on the cores makes "
        "the times noisy (the median step time is the least affected)",
        highlight=False,
    )
    console.print(f"TRL settings: {json.dumps(res['settings'])}", highlight=False)
    console.print("not matched exactly:", highlight=False)
    for note in res["notes"]:
        console.print(f"  - {note}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
