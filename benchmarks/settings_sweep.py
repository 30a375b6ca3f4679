"""Every pair of the trainer's main settings, two demo steps each: trained, refused before work, or a
defect.

    pip install allpairspy
    python benchmarks/settings_sweep.py              # the all-pairs rows (about 30), then the counts
    python benchmarks/settings_sweep.py --list       # the rows only
    python benchmarks/settings_sweep.py --only 3 7   # some rows again, with their tracebacks

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

TINY = (
    "trainer.progress=false",
    "trainer.steps=2",
    "data.train_batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "actor.mini_batches=2",
    "trainer.ray_num_cpus=2",
)


def rows() -> list[list[tuple[str, tuple[str, ...]]]]:
    from allpairspy import AllPairs

    return [list(row) for row in AllPairs([values for _, values in DIMENSIONS])]


def describe(row: list[tuple[str, tuple[str, ...]]]) -> str:
    return ", ".join(f"{name}={label}" for (name, _), (label, _) in zip(DIMENSIONS, row, strict=True))


def run_row(row: list[tuple[str, tuple[str, ...]]], out: Path) -> tuple[str, str]:
    """(outcome, detail) of one row."""
    from rich.console import Console

    from rlport.errors import ConfigError
    from rlport.train.cli import build_config
    from rlport.train.driver.trainer import Trainer

    overrides = [*TINY, f"trainer.output_dir={out}", *(o for _, group in row for o in group)]
    try:
        trainer = Trainer(build_config(overrides, demo=True), console=Console(file=io.StringIO()))
    except ConfigError as exc:
        if not exc.fix:
            return "defect", f"refused without a fix: {exc.message}"
        return "refused", exc.message.splitlines()[0]
    try:
        result = trainer.fit()
    except Exception as exc:  # every failure after the start is what this finds
        return (
            "defect",
            f"{type(exc).__name__} after the start: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    bad = [
        f"step {h['step']} {k}={v}"
        for h in result.history
        for k, v in h.items()
        if isinstance(v, float) and not math.isfinite(v)
    ]
    if bad:
        return "defect", "non-finite: " + "; ".join(bad[:3])
    if len(result.history) != 2:
        return "defect", f"{len(result.history)} steps logged, not 2"
    return "trained", ""


def sweep(chosen: list[int] | range, report: Any = print) -> dict[str, list[tuple[int, str]]]:
    """Run rows ``chosen`` (numbers into :func:`rows`) one after the other in this process; each
    outcome's rows as ``(number, detail)``. ``report`` gets a line per row as it ends."""
    all_rows = rows()
    found: dict[str, list[tuple[int, str]]] = {"trained": [], "refused": [], "defect": []}
    for i in chosen:
        with tempfile.TemporaryDirectory(prefix="rlport-sweep-") as out:
            t = time.perf_counter()
            try:
                outcome, detail = run_row(all_rows[i], Path(out))
            except Exception:  # building the configuration itself failed
                outcome, detail = "defect", traceback.format_exc(limit=3)
            found[outcome].append((i, detail))
            report(f"{i:3d} {outcome:8s} {time.perf_counter() - t:5.1f}s  {describe(all_rows[i])}")
            if detail:
                report(f"      {detail}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="print the rows and stop")
    parser.add_argument("--only", type=int, nargs="*", help="run these row numbers (with tracebacks)")
    args = parser.parse_args()
    os.environ.setdefault("RLPORT_SUMMARY", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    all_rows = rows()
    if args.list:
        for i, row in enumerate(all_rows):
            print(f"{i:3d}  {describe(row)}")
        return 0
    chosen = args.only if args.only else range(len(all_rows))
    t0 = time.perf_counter()
    found = sweep(chosen, report=lambda line: print(line, flush=True))
    counts = {outcome: len(found[outcome]) for outcome in found}
    total = sum(counts.values())
    print(
        f"{total} rows in {time.perf_counter() - t0:.0f} s: {counts['trained']} trained, "
        f"{counts['refused']} refused before work, {counts['defect']} defects"
    )
    return 1 if counts["defect"] else 0


if __name__ == "__main__":
    sys.exit(main())
