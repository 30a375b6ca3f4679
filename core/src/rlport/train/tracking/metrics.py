"""Per-step metrics: a JSONL log, a one-line summary per step, and the reward curve as a PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per step to ``path``. On resume, lines after the resumed step are
    dropped, so the log tells one consistent history."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def write_generations(folder: str | Path, step: int, rows: list[dict[str, Any]]) -> Path:
    """verl's dump of a step's answers (``trainer.rollout_data_dir`` and
    ``trainer.validation_data_dir``): ``folder/STEP.jsonl``, one object per answer with ``input``,
    ``output``, ``gts``, ``score`` and ``step``."""
    out = Path(folder).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{step}.jsonl"
    with path.open("w") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "step": step}, ensure_ascii=False, default=str) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def step_line(m: dict[str, Any], steps: int) -> str:
    """The line printed after each step."""
    phases = " ".join(
        f"{k.split('/', 1)[1]} {m[k]:.2f}"
        for k in ("time/rollout", "time/reward", "time/sleep", "time/logprob", "time/update", "time/sync")
        if k in m
    )
    perf = f" step {m['perf/tokens_per_s']:.0f} tok/s" if "perf/tokens_per_s" in m else ""
    if "perf/mfu" in m:
        perf += f" mfu {100 * m['perf/mfu']:.1f}%"
    if "actor/pg_loss" in m:
        actor = f"loss {m['actor/pg_loss']:+.4f} kl {m['actor/kl']:.4f} ent {m['actor/entropy']:.2f} "
    else:
        actor = "actor not updated (trainer.critic_warmup_steps) "
    if "critic/vf_loss" in m:
        actor += f"vf_loss {m['critic/vf_loss']:.4f} "
    return (
        f"step {m['step']}/{steps} reward {m['reward/mean']:.3f}±{m['reward/std']:.3f} "
        f"{actor}"
        f"mismatch {m.get('rollout/logprob_mismatch', math.nan):.1e} rollout {m['perf/rollout_tokens_per_s']:.0f} tok/s"
        f"{perf} {m['time/step']:.2f}s [{phases}]"
    )


def val_line(m: dict[str, Any], when: str) -> str:
    """The line printed after a validation: the greedy reward, overall and per data source."""
    sources = " ".join(
        f"{k[4:-12]} {v:.3f}"
        for k, v in sorted(m.items())
        if k.startswith("val/") and k.endswith("/reward/mean") and k != "val/reward/mean"
    )
    spread = " ".join(
        f"{k[len('val/reward/') :]} {v:.3f}"
        for k, v in sorted(m.items())
        if k.startswith(("val/reward/best@", "val/reward/worst@"))
    )
    return (
        f"validation {when}: reward {m['val/reward/mean']:.3f}"
        + (f" ({spread})" if spread else "")
        + f" [{sources}] {m.get('time/validate', 0.0):.2f}s"
    )


def plot_rewards(records: Iterable[dict[str, Any]], path: str | Path, title: str = "rlport train") -> Path:
    """Reward mean (with a band of one std) per step, written as a PNG (matplotlib, Agg)."""
    from rlport.extras import import_optional

    matplotlib = import_optional("matplotlib", "train", purpose="plotting the reward curve")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in records if "reward/mean" in r), key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    mean = [r["reward/mean"] for r in rows]
    std = [r.get("reward/std", 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(steps, mean, marker="o", markersize=3, label="reward mean")
    ax.fill_between(
        steps,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        alpha=0.2,
        label="± std",
    )
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
