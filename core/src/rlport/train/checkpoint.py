"""Checkpoints: a Hugging Face model folder plus the trainer's state, written so that a fault never
leaves half of one behind, and resumable.

``output_dir/checkpoints/step_N/`` holds the actor (``save_pretrained``: config.json and
safetensors), the tokenizer, the optimizer state (``optimizer.pt``; a sharded strategy adds its
``dcp/`` folder of per-rank shards, :mod:`torch.distributed.checkpoint`) and ``trainer_state.json``
(step, data position, configuration). The folder loads as a model anywhere
(``AutoModelForCausalLM.from_pretrained``) and ``trainer.resume_from=<folder>`` (or ``latest``)
continues the run from the next step.

A checkpoint is written aside, in ``step_N.partial-<random>/``, and renamed to ``step_N/`` by one
``os.replace`` once everything, ``trainer_state.json`` last, is on disk (:func:`writing`). A run
killed while it writes leaves only the ``.partial-`` folder, which nothing takes for a checkpoint:
:func:`latest` skips it and :func:`stale_partials` reports it on the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport.train.config.derive import default_strategy

# The whole layout of ``step_N/``, declared here only:
#: the trainer's state (step, sampler, the configuration, the KL coefficient)
STATE_FILE = "trainer_state.json"
#: the optimizer state of strategies that keep whole parameters
OPTIMIZER_FILE = "optimizer.pt"
#: the sharded model and optimizer state of strategies that shard (one file per rank, and metadata)
SHARDED_DIR = "dcp"
#: the critic's own folder (a Hugging Face value model and its optimizer state), PPO only
CRITIC_DIR = "critic"
#: the LoRA adapters peft can load (PeftModel.from_pretrained), beside the merged weights
ADAPTER_DIR = "lora_adapter"
LATEST = "latest"
PARTIAL = ".partial-"
_STEP = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    step: int
    sampler: dict[str, int]
    config: dict[str, Any]
    version: str = ""
    #: the KL-in-reward coefficient reached (algorithm.kl_ctrl.type=adaptive moves it each step)
    kl_coef: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "step": self.step,
                "sampler": self.sampler,
                "config": self.config,
                "rlport_version": self.version,
                "kl_coef": self.kl_coef,
            },
            indent=2,
            sort_keys=True,
        )


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoints_root(output_dir) / f"step_{step}"


@contextlib.contextmanager
def writing(output_dir: str | Path, step: int) -> Iterator[Path]:
    """A fresh ``step_N.partial-<random>/`` folder to fill; on a clean exit it becomes ``step_N/``
    (a checkpoint of that step already there is replaced) and ``latest`` names it. The body must
    write ``trainer_state.json`` (:func:`write_state`) last: without it nothing is committed. On an
    exception the partial folder is removed; a killed process leaves it, unmistakably partial."""
    final = checkpoint_dir(output_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + PARTIAL + secrets.token_hex(4))
    partial.mkdir()
    try:
        yield partial
        if not (partial / STATE_FILE).is_file():
            raise RuntimeError(f"{partial} has no {STATE_FILE}: the checkpoint was not finished")
        _fsync(partial / STATE_FILE)
        _commit(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _atomic_write(final.parent / LATEST, final.name + "\n")


def _commit(partial: Path, final: Path) -> None:
    old = None
    if final.exists():  # os.replace cannot replace a non-empty folder: move the old one out first
        old = final.with_name(final.name + ".old-" + secrets.token_hex(4))
        os.replace(final, old)
    os.replace(partial, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + PARTIAL + secrets.token_hex(4))
    tmp.write_text(text)
    os.replace(tmp, path)


def write_state(folder: str | Path, state: TrainerState, tokenizer: Any, model_path: str | Path) -> None:
    """Write the tokenizer and then the trainer state next to the worker-saved weights (the state
    file marks the folder complete); copy the model's generation config if the save did not."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    gen = Path(model_path) / "generation_config.json"
    if gen.is_file() and not (out / gen.name).exists():
        shutil.copy(gen, out / gen.name)
    (out / STATE_FILE).write_text(state.to_json())


def complete(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint under ``output_dir``, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune(output_dir: str | Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest complete checkpoints (``trainer.max_checkpoints_to_keep``;
    0 keeps all); return what was removed. Folders being written are never touched. The oldest go
    first, and ``latest`` always names one that is kept."""
    if keep <= 0:
        return []
    old = [folder for _, folder in complete(output_dir)[:-keep]]
    for folder in old:
        # out of the way in one rename, then deleted: a crash mid-delete leaves a stale .old- folder
        doomed = folder.with_name(folder.name + ".old-" + secrets.token_hex(4))
        os.replace(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return old


def latest(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or ``None``."""
    found = complete(output_dir)
    return found[-1][1] if found else None


def stale_partials(output_dir: str | Path) -> list[Path]:
    """Folders a run stopped in the middle of writing (``step_N.partial-*``, ``step_N.old-*``)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (PARTIAL in p.name or ".old-" in p.name))


def resolve_resume(value: str, output_dir: str | Path) -> Path | None:
    """The checkpoint ``trainer.resume_from`` names: ``""`` none, ``latest`` the newest complete
    one under ``output_dir`` (``None`` when there is none yet: the run starts from the beginning),
    else that folder, which must be a complete checkpoint."""
    if not value:
        return None
    if value == LATEST:
        return latest(output_dir)
    p = Path(value).expanduser()
    if PARTIAL in p.name:
        raise ConfigError(
            f"trainer.resume_from='{p}' is a checkpoint a run stopped writing (its name has {PARTIAL!r})",
            f"rlport train trainer.resume_from=latest trainer.output_dir={output_dir}",
        )
    read_state(p)  # a clear error if it is no checkpoint
    return p


def missing_state(folder: Path, name: str, strategy: str) -> ConfigError:
    """The error for a checkpoint without the optimizer state ``strategy`` resumes from."""
    config = read_state(folder).config
    written = config.get("actor", {}).get("strategy") or default_strategy(
        int(config.get("trainer", {}).get("workers", 1))
    )
    return ConfigError(
        f"checkpoint '{folder}' has no {name}, the optimizer state actor.strategy={strategy} resumes "
        f"from; it was written with actor.strategy={written}",
        f"resume with the strategy that wrote it: rlport train actor.strategy={written} "
        f"trainer.resume_from={folder}",
    )


def read_state(folder: str | Path) -> TrainerState:
    p = Path(folder)
    state_file = p / STATE_FILE
    if not state_file.is_file():
        raise ConfigError(
            f"trainer.resume_from='{p}' is not a checkpoint: {STATE_FILE} is missing",
            "give a folder written by rlport train, e.g. trainer.resume_from=outputs/rlport/checkpoints/step_50, "
            "or trainer.resume_from=latest",
        )
    data = json.loads(state_file.read_text())
    return TrainerState(
        step=int(data["step"]),
        sampler=dict(data["sampler"]),
        config=dict(data.get("config", {})),
        version=str(data.get("rlport_version", "")),
        kl_coef=data.get("kl_coef"),
    )
