"""Every pair of the trainer's main settings, two demo steps each: trained, refused before work, or a
defect.

    pip install allpairspy
    python benchmarks/settings_sweep.py              # the all-pairs rows (about 30), then the counts
    python benchmarks/settings_sweep.py --list       # the rows only
    python benchmarks/settings_sweep.py --only 3 7   # some rows again, with their tracebacks
    python benchmarks/settings_sweep.py --wide       # the wide set: every estimator, loss, KL kind, ...
    python benchmarks/settings_sweep.py --wide --random 20 --seed 1   # and 20 random full rows

``--wide`` runs a separate all-pairs set over many more dimensions (every documented setting whose
values switch a code path: every estimator, policy loss and aggregation mode, the KL kinds of the
loss and of the reward, rollout correction's variants, sampling, validation, offload, dtypes,
schedules, the critic's own settings...), then one row for each value that is tried on its own
(``WIDE_SOLO``: values refused with everything, which all-pairs would spend a row per pair on).
Its all-pairs rows leave out the pairs the pre-flight checks refuse (:func:`wide_refusal`) and add
a row for each trainable pair the filtered search missed.
``--random K --seed N`` adds K full rows drawn at random (seeded) from the same dimensions; the
same flags give the same row numbers, so ``--only`` reruns them. CI runs the default set only.

The rows cover every pair of values of the dimensions below (allpairspy's all-pairs generator, a
fixed order, so a row number names the same combination in every run). Each row is a short
``rlport train --demo`` in this process (two steps, 4 prompts x 4 samples of 4 tokens; Ray starts
for two workers), classified as

- ``trained``: both steps ran, every logged figure finite, the replicas' weights in sync;
- ``refused``: a ConfigError before any worker started (the pre-flight checks), naming the fix;
- ``defect``: anything else: an error after the run started, a non-finite figure, or a refusal
  without a fix.

Exit status 1 when a row is a defect.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
import traceback
from importlib.util import find_spec
from pathlib import Path
from typing import Any

#: each dimension: its name and its values, a value being the overrides it sets
DIMENSIONS: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = [
    (
        "estimator",
        [
            ("grpo", ()),
            ("gae", ("algorithm.adv_estimator=gae",)),
            ("rloo", ("algorithm.adv_estimator=rloo",)),
            ("remax", ("algorithm.adv_estimator=remax",)),
            ("reinforce++", ("algorithm.adv_estimator=reinforce_plus_plus",)),
            ("opo", ("algorithm.adv_estimator=opo",)),
        ],
    ),
    (
        "policy loss",
        [
            ("vanilla", ()),
            ("gspo", ("algorithm.policy_loss=gspo",)),
            ("cispo", ("algorithm.policy_loss=cispo",)),
            ("clip_cov", ("algorithm.policy_loss=clip_cov",)),
            ("geo_mean", ("algorithm.policy_loss=geo_mean",)),
        ],
    ),
    (
        "KL",
        [
            ("none", ()),
            ("loss k3", ("algorithm.use_kl_loss=true",)),
            ("loss k1+", ("algorithm.use_kl_loss=true", "algorithm.kl_loss_type=k1+")),
            ("reward", ("algorithm.use_kl_in_reward=true",)),
        ],
    ),
    (
        "rollout correction",
        [
            ("none", ()),
            ("token IS", ("algorithm.rollout_correction.rollout_is=token",)),
            (
                "seq IS + k1 rejection",
                (
                    "algorithm.rollout_correction.rollout_is=sequence",
                    "algorithm.rollout_correction.rollout_rs=token_k1",
                    "algorithm.rollout_correction.rollout_rs_threshold=1.5",
                ),
            ),
            (
                "bypass",
                (
                    "algorithm.rollout_correction.bypass_mode=true",
                    "algorithm.rollout_correction.rollout_is=token",
                ),
            ),
        ],
    ),
    ("LoRA", [("off", ()), ("r4", ("model.lora_rank=4",))]),
    (
        "strategy",
        [
            ("replicated x1", ()),
            ("replicated x2", ("trainer.workers=2", "actor.strategy=replicated")),
            ("ddp x2", ("trainer.workers=2", "actor.strategy=ddp")),
            ("fsdp x2", ("trainer.workers=2", "actor.strategy=fsdp")),
        ],
    ),
    ("sleep", [("on", ()), ("off", ("rollout.sleep=false",))]),
    (
        "token budget",
        [("off", ()), ("on", ("actor.use_dynamic_bsz=true", "actor.ppo_max_token_len_per_gpu=136"))],
    ),
    ("grad checkpointing", [("off", ()), ("on", ("actor.gradient_checkpointing=true",))]),
    # the engines installed here (vllm needs its extra; without it a vllm run is refused before work)
    ("engine", [("hf", ()), *((("vllm", ("rollout.engine=vllm",)),) if find_spec("vllm") else ())]),
]

RC = "algorithm.rollout_correction."
#: the wide set (``--wide``): every documented setting whose values switch a code path, a value
#: being the overrides it sets (``{out}`` is the row's output folder)
WIDE_DIMENSIONS: list[tuple[str, list[tuple[str, tuple[str, ...]]]]] = [
    (
        "estimator",
        [
            ("grpo", ()),
            ("gae", ("algorithm.adv_estimator=gae",)),
            ("gae warm-up", ("algorithm.adv_estimator=gae", "trainer.critic_warmup_steps=1")),
            ("rloo", ("algorithm.adv_estimator=rloo",)),
            ("opo", ("algorithm.adv_estimator=opo",)),
            ("gpg", ("algorithm.adv_estimator=gpg",)),
            ("grpo_passk", ("algorithm.adv_estimator=grpo_passk",)),
            ("reinforce++", ("algorithm.adv_estimator=reinforce_plus_plus",)),
            ("reinforce++ baseline", ("algorithm.adv_estimator=reinforce_plus_plus_baseline",)),
            ("remax", ("algorithm.adv_estimator=remax",)),
        ],
    ),
    (
        "policy loss",
        [
            ("vanilla", ()),
            ("gspo", ("algorithm.policy_loss=gspo",)),
            ("gpg", ("algorithm.policy_loss=gpg",)),
            ("geo_mean", ("algorithm.policy_loss=geo_mean",)),
            ("cispo", ("algorithm.policy_loss=cispo",)),
            ("clip_cov", ("algorithm.policy_loss=clip_cov",)),
            ("kl_cov", ("algorithm.policy_loss=kl_cov",)),
            ("sapo", ("algorithm.policy_loss=sapo",)),
            ("dro", ("algorithm.policy_loss=dro", "algorithm.policy_loss_options.dro_beta=0.1")),
            ("dppo_tv", ("algorithm.policy_loss=dppo_tv",)),
            ("dppo_kl", ("algorithm.policy_loss=dppo_kl",)),
        ],
    ),
    (
        "KL",
        [
            ("none", ()),
            ("loss low_var_kl", ("algorithm.use_kl_loss=true",)),
            ("loss kl", ("algorithm.use_kl_loss=true", "algorithm.kl_loss_type=kl")),
            ("loss abs", ("algorithm.use_kl_loss=true", "algorithm.kl_loss_type=abs")),
            ("loss mse+", ("algorithm.use_kl_loss=true", "algorithm.kl_loss_type=mse+")),
            ("loss k2", ("algorithm.use_kl_loss=true", "algorithm.kl_loss_type=k2")),
            ("reward kl", ("algorithm.use_kl_in_reward=true",)),
            ("reward abs", ("algorithm.use_kl_in_reward=true", "algorithm.kl_penalty=abs")),
            (
                "reward low_var_kl adaptive",
                (
                    "algorithm.use_kl_in_reward=true",
                    "algorithm.kl_penalty=low_var_kl",
                    "algorithm.kl_ctrl.type=adaptive",
                ),
            ),
            (
                "loss k3+ and reward mse",
                (
                    "algorithm.use_kl_loss=true",
                    "algorithm.kl_loss_type=k3+",
                    "algorithm.use_kl_in_reward=true",
                    "algorithm.kl_penalty=mse",
                ),
            ),
        ],
    ),
    (
        "loss aggregation",
        [
            ("token-mean", ()),
            ("token-sum", ("algorithm.loss_agg_mode=token-sum",)),
            ("seq-mean-token-mean", ("algorithm.loss_agg_mode=seq-mean-token-mean",)),
            ("seq-mean-token-sum", ("algorithm.loss_agg_mode=seq-mean-token-sum",)),
            ("seq-mean-token-sum-norm", ("algorithm.loss_agg_mode=seq-mean-token-sum-norm",)),
            (
                "seq-mean-token-sum-norm /8",
                ("algorithm.loss_agg_mode=seq-mean-token-sum-norm", "algorithm.loss_scale_factor=8"),
            ),
        ],
    ),
    (
        "rollout correction",
        [
            ("none", ()),
            ("token IS", (f"{RC}rollout_is=token",)),
            ("seq IS normalized", (f"{RC}rollout_is=sequence", f"{RC}rollout_is_batch_normalize=true")),
            ("token IS icepop", (f"{RC}rollout_is=token", f"{RC}rollout_is_threshold=0.5_5.0")),
            ("token k3 rejection", (f"{RC}rollout_rs=token_k3", f"{RC}rollout_rs_threshold=0.05")),
            (
                "seq k1 + max k3 rejection",
                (f"{RC}rollout_rs='seq_mean_k1,seq_max_k3'", f"{RC}rollout_rs_threshold='0.5_2.0,0.5'"),
            ),
            ("bypass ppo_clip", (f"{RC}bypass_mode=true", f"{RC}rollout_is=token")),
            (
                "bypass reinforce",
                (f"{RC}bypass_mode=true", f"{RC}loss_type=reinforce", f"{RC}rollout_is=token"),
            ),
        ],
    ),
    ("samples", [("n=4", ()), ("n=2", ("rollout.n=2",)), ("n=1", ("rollout.n=1",))]),
    (
        "strategy",
        [
            ("replicated x1", ()),
            ("replicated x2", ("trainer.workers=2", "actor.strategy=replicated")),
            ("ddp x2", ("trainer.workers=2", "actor.strategy=ddp")),
            ("fsdp x2", ("trainer.workers=2", "actor.strategy=fsdp")),
            (
                "fsdp x2 bf16",
                (
                    "trainer.workers=2",
                    "actor.strategy=fsdp",
                    "actor.fsdp_config.param_dtype=bfloat16",
                    "critic.fsdp_config.param_dtype=bfloat16",
                    "actor.fsdp_config.reduce_dtype=",
                ),
            ),
        ],
    ),
    (
        "LoRA",
        [
            ("off", ()),
            ("r4", ("model.lora_rank=4",)),
            ("r4 q,v", ("model.lora_rank=4", "model.target_modules=[q_proj,v_proj]", "model.lora_alpha=8")),
        ],
    ),
    ("offload", [("default", ()), ("on", ("actor.offload=true",)), ("off", ("actor.offload=false",))]),
    ("sleep", [("on", ()), ("off", ("rollout.sleep=false",))]),
    (
        "sampling",
        [
            ("default", ()),
            ("top_k 2", ("rollout.top_k=2",)),
            ("top_p 0.5", ("rollout.top_p=0.5",)),
            ("temperature 0.7", ("rollout.temperature=0.7",)),
        ],
    ),
    (
        "validation",
        [
            ("off", ()),
            (
                "greedy, every step",
                (
                    "data.val_files=[{out}/data/test.parquet]",
                    "trainer.test_freq=1",
                    "trainer.val_before_train=true",
                ),
            ),
            (
                "sampled n=2",
                (
                    "data.val_files=[{out}/data/test.parquet]",
                    "trainer.test_freq=1",
                    "rollout.val_kwargs.do_sample=true",
                    "rollout.val_kwargs.temperature=0.8",
                    "rollout.val_kwargs.n=2",
                    "rollout.val_kwargs.top_k=3",
                    "data.val_batch_size=1",
                    "trainer.log_val_generations=2",
                    "trainer.validation_data_dir={out}/val",
                ),
            ),
        ],
    ),
    (
        "updates",
        [
            ("default", ()),
            ("2 epochs", ("actor.ppo_epochs=2",)),
            ("mini-batch of 2 prompts", ("actor.ppo_mini_batch_size=2",)),
            ("micro-batch 1", ("actor.micro_batch_size=1", "critic.micro_batch_size=1")),
        ],
    ),
    (
        "critic",
        [
            ("default", ()),
            ("token budget", ("critic.use_dynamic_bsz=true", "critic.ppo_max_token_len_per_gpu=136")),
            (
                "own loop",
                ("critic.ppo_epochs=2", "critic.mini_batches=1", "critic.loss_agg_mode=seq-mean-token-sum"),
            ),
            ("checkpointing", ("critic.gradient_checkpointing=true", "critic.cliprange_value=0.1")),
        ],
    ),
    ("advantage", [("std-normalized", ()), ("not normalized", ("algorithm.norm_adv_by_std=false",))]),
    ("entropy", [("0", ()), ("0.01", ("algorithm.entropy_coef=0.01",))]),
    (
        "clip",
        [
            ("default", ()),
            ("dual clip 3", ("algorithm.clip_ratio_c=3",)),
            ("wide", ("algorithm.clip_ratio_low=0.5", "algorithm.clip_ratio_high=1.0")),
        ],
    ),
    (
        "token budget",
        [("off", ()), ("on", ("actor.use_dynamic_bsz=true", "actor.ppo_max_token_len_per_gpu=136"))],
    ),
    ("grad checkpointing", [("off", ()), ("on", ("actor.gradient_checkpointing=true",))]),
    (
        "optimizer",
        [
            ("default", ()),
            (
                "cosine warm-up",
                (
                    "actor.lr_schedule.type=cosine",
                    "actor.lr_schedule.warmup_steps=1",
                    "critic.lr_schedule.type=cosine",
                    "critic.lr_schedule.warmup_steps_ratio=0.5",
                ),
            ),
            ("decay, no clip", ("actor.weight_decay=0.1", "actor.grad_clip=0", "critic.grad_clip=0")),
        ],
    ),
    ("dtype", [("float32", ()), ("bfloat16", ("model.dtype=bfloat16",))]),
    (
        "attention",
        [
            ("rlport", ()),
            ("sdpa", ("model.attn_implementation=sdpa",)),
            ("eager", ("model.attn_implementation=eager",)),
        ],
    ),
    (
        "data and output",
        [
            ("default", ()),
            ("in order, 8 prompts", ("data.shuffle=false", "data.train_max_samples=8")),
            (
                "checkpoint every step",
                (
                    "trainer.save_every=1",
                    "trainer.max_checkpoints_to_keep=1",
                    "trainer.rollout_data_dir={out}/rollouts",
                ),
            ),
        ],
    ),
    # the engines installed here (vllm needs its extra; without it a vllm run is refused before work)
    ("engine", [("hf", ()), *((("vllm", ("rollout.engine=vllm",)),) if find_spec("vllm") else ())]),
]

#: values tried once each, in a row of every other dimension's first value: refused whatever the
#: rest of the row (all-pairs would spend a row on each of their pairs), or documented but rare
WIDE_SOLO: list[tuple[str, tuple[str, tuple[str, ...]]]] = [
    ("sampling", ("temperature 0", ("rollout.temperature=0",))),
    (
        "strategy",
        (
            "fsdp x2 param offload",
            (
                "trainer.workers=2",
                "actor.strategy=fsdp",
                "actor.fsdp_config.param_offload=true",
                "actor.fsdp_config.optimizer_offload=true",
            ),
        ),
    ),
    (
        "strategy",
        (
            "fsdp x2 gae param offload",
            (
                "trainer.workers=2",
                "actor.strategy=fsdp",
                "algorithm.adv_estimator=gae",
                "critic.fsdp_config.param_offload=true",
            ),
        ),
    ),
    ("dtype", ("float16", ("model.dtype=float16",))),
    (
        "validation",
        ("validation only", ("data.val_files=[{out}/data/test.parquet]", "trainer.val_only=true")),
    ),
]

#: estimators that compare a group's samples: refused with rollout.n=1
GROUPED = {"grpo", "rloo", "opo", "gpg", "grpo_passk", "reinforce++ baseline"}


def wide_refusal(labels: dict[str, str]) -> str | None:
    """Why the pre-flight checks refuse a (partial) wide row, by its labels; None where it trains.
    The wide all-pairs rows leave these pairs out (each would cost a refused row that tests
    nothing else); the checks themselves are tested beside them and in CI's rows."""
    get = labels.get
    loss, rc = get("policy loss"), get("rollout correction") or ""
    if get("samples") == "n=1" and get("estimator") in GROUPED:
        return "rollout.n=1 with a grouped estimator"
    if rc.startswith("bypass") and loss not in (None, "vanilla"):
        return "bypass mode with a policy loss other than vanilla"
    if rc.startswith("bypass") and get("sampling") == "temperature 0.7":
        return "bypass mode at a temperature other than 1"
    if get("offload") == "on" and (get("strategy") or "").startswith("fsdp"):
        return "actor.offload=true with fsdp"
    other_terms = (get("KL") or "").startswith("loss") or get("entropy") == "0.01"
    if (
        loss in ("geo_mean", "sapo")
        and get("loss aggregation") not in (None, "seq-mean-token-mean")
        and other_terms
    ):
        return "geo_mean or sapo with another aggregation and the KL loss or entropy"
    return None


def _trains(row: list[tuple[str, tuple[str, ...]]]) -> bool:
    """allpairspy's filter over a partial wide row (its first ``len(row)`` dimensions)."""
    return (
        wide_refusal({name: label for (name, _), (label, _) in zip(WIDE_DIMENSIONS, row, strict=False)})
        is None
    )


TINY = (
    "trainer.progress=false",
    "trainer.steps=2",
    "data.train_batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "actor.mini_batches=2",
    "trainer.ray_num_cpus=2",
)


Row = list[tuple[str, tuple[str, ...]]]
#: the traceback of the last row's error after the start (``--only`` prints it)
LAST_ERROR: list[str] = []
Dimensions = list[tuple[str, list[tuple[str, tuple[str, ...]]]]]


def rows(wide: bool = False, random: int = 0, seed: int = 0) -> list[Row]:
    """The rows: all-pairs over :data:`DIMENSIONS` (``wide``: over :data:`WIDE_DIMENSIONS`, then a
    row for each of :data:`WIDE_SOLO`), then ``random`` rows drawn with ``seed``."""
    from allpairspy import AllPairs

    dims = dimensions(wide)
    keep = _trains if wide else (lambda row: True)
    out = [list(row) for row in AllPairs([values for _, values in dims], filter_func=keep)]
    if wide:
        out.extend(_missing_pairs(out))
    if wide:
        names = [name for name, _ in dims]
        for name, value in WIDE_SOLO:
            row = [values[0] for _, values in dims]
            row[names.index(name)] = value
            out.append(row)
    if random:
        import random as random_module

        rng = random_module.Random(seed)
        while random:
            row = [rng.choice(values) for _, values in dims]
            if keep(row):
                out.append(row)
                random -= 1
    return out


def _missing_pairs(found: list[Row]) -> list[Row]:
    """A row for each trainable pair of wide values that allpairspy's greedy search under the filter
    left out: the pair on the first value of every other dimension."""
    import itertools

    dims, out = WIDE_DIMENSIONS, []
    seen = {
        (a, row[a][0], b, row[b][0]) for row in found for a, b in itertools.combinations(range(len(dims)), 2)
    }
    for (a, (_, va)), (b, (_, vb)) in itertools.combinations(enumerate(dims), 2):
        for x, y in itertools.product(va, vb):
            if (a, x[0], b, y[0]) in seen:
                continue
            row = [values[0] for _, values in dims]
            row[a], row[b] = x, y
            if _trains(row):
                out.append(row)
                seen |= {(i, row[i][0], j, row[j][0]) for i, j in itertools.combinations(range(len(dims)), 2)}
    return out


def dimensions(wide: bool = False) -> Dimensions:
    return WIDE_DIMENSIONS if wide else DIMENSIONS


def describe(row: Row, dims: Dimensions | None = None) -> str:
    dims = dims if dims is not None else DIMENSIONS
    return ", ".join(f"{name}={label}" for (name, _), (label, _) in zip(dims, row, strict=True))


def run_row(row: Row, out: Path) -> tuple[str, str]:
    """(outcome, detail) of one row."""
    from rich.console import Console

    from rlport.errors import ConfigError
    from rlport.train.cli import build_config
    from rlport.train.driver.trainer import Trainer

    given = [o.replace("{out}", str(out)) for _, group in row for o in group]
    overrides = [*TINY, f"trainer.output_dir={out}", *given]
    try:
        cfg = build_config(overrides, demo=True)
        trainer = Trainer(cfg, console=Console(file=io.StringIO()))
    except ConfigError as exc:
        if not exc.fix:
            return "defect", f"refused without a fix: {exc.message}"
        return "refused", exc.message.splitlines()[0]
    try:
        result = trainer.fit()
    except Exception as exc:  # every failure after the start is what this finds
        LAST_ERROR.append(traceback.format_exc())
        return (
            "defect",
            f"{type(exc).__name__} after the start: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    bad = [
        f"step {h.get('step')} {k}={v}"
        for h in [*result.history, *(getattr(result, "validation", None) or [])]
        for k, v in h.items()
        if isinstance(v, float) and not math.isfinite(v)
    ]
    if bad:
        return "defect", "non-finite: " + "; ".join(bad[:3])
    steps = 0 if cfg.trainer.val_only else 2
    if len(result.history) != steps:
        return "defect", f"{len(result.history)} steps logged, not {steps}"
    return "trained", ""


def sweep(
    chosen: list[int] | range,
    report: Any = print,
    *,
    all_rows: list[Row] | None = None,
    dims: Dimensions | None = None,
    tracebacks: bool = False,
) -> dict[str, list[tuple[int, str]]]:
    """Run rows ``chosen`` (numbers into ``all_rows``, default :func:`rows`) one after the other in
    this process; each outcome's rows as ``(number, detail)``. ``report`` gets a line per row as it
    ends; with ``tracebacks`` a defect's line is followed by the traceback of its error."""
    all_rows = all_rows if all_rows is not None else rows()
    found: dict[str, list[tuple[int, str]]] = {"trained": [], "refused": [], "defect": []}
    for i in chosen:
        with tempfile.TemporaryDirectory(prefix="rlport-sweep-") as out:
            t = time.perf_counter()
            LAST_ERROR.clear()
            try:
                outcome, detail = run_row(all_rows[i], Path(out))
            except Exception:  # building the configuration itself failed
                outcome, detail = "defect", traceback.format_exc(limit=3)
            found[outcome].append((i, detail))
            report(f"{i:3d} {outcome:8s} {time.perf_counter() - t:5.1f}s  {describe(all_rows[i], dims)}")
            if detail:
                report(f"      {detail}")
            if tracebacks and outcome == "defect" and LAST_ERROR:
                report(LAST_ERROR[-1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="print the rows and stop")
    parser.add_argument("--only", type=int, nargs="*", help="run these row numbers (with tracebacks)")
    parser.add_argument("--wide", action="store_true", help="the wide set of dimensions (not CI's)")
    parser.add_argument("--random", type=int, default=0, metavar="K", help="add K random full rows")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="the seed of --random's draw")
    args = parser.parse_args()
    os.environ.setdefault("RLPORT_SUMMARY", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    all_rows, dims = rows(args.wide, args.random, args.seed), dimensions(args.wide)
    if args.list:
        for i, row in enumerate(all_rows):
            print(f"{i:3d}  {describe(row, dims)}")
        return 0
    chosen = args.only if args.only else range(len(all_rows))
    t0 = time.perf_counter()
    found = sweep(
        chosen,
        report=lambda line: print(line, flush=True),
        all_rows=all_rows,
        dims=dims,
        tracebacks=bool(args.only),
    )
    counts = {outcome: len(found[outcome]) for outcome in found}
    total = sum(counts.values())
    print(
        f"{total} rows in {time.perf_counter() - t0:.0f} s: {counts['trained']} trained, "
        f"{counts['refused']} refused before work, {counts['defect']} defects"
    )
    return 1 if counts["defect"] else 0


if __name__ == "__main__":
    sys.exit(main())
