"""Checkpoints: a Hugging Face model folder plus the trainer's state, resumable.

``output_dir/checkpoints/step_N/`` holds the actor (``save_pretrained``: config.json and
safetensors), the tokenizer, ``optimizer.pt`` and ``trainer_state.json`` (step, data position,
configuration). The folder loads as a model anywhere (``AutoModelForCausalLM.from_pretrained``)
and ``trainer.resume_from=<folder>`` continues the run from the next step.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class TrainerState:
    step: int
    sampler: dict[str, int]
    config: dict[str, Any]
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "step": self.step,
                "sampler": self.sampler,
                "config": self.config,
                "rlport_version": self.version,
            },
            indent=2,
            sort_keys=True,
        )


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step}"


def write_state(folder: str | Path, state: TrainerState, tokenizer: Any, model_path: str | Path) -> None:
    """Write the trainer state and tokenizer next to the worker-saved weights; copy the model's
    generation config if the save did not."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    gen = Path(model_path) / "generation_config.json"
    if gen.is_file() and not (out / gen.name).exists():
        shutil.copy(gen, out / gen.name)
    (out / STATE_FILE).write_text(state.to_json())
    latest = out.parent / "latest"
    latest.write_text(out.name + "\n")


def read_state(folder: str | Path) -> TrainerState:
    p = Path(folder)
    state_file = p / STATE_FILE
    if not state_file.is_file():
        raise ConfigError(
            f"trainer.resume_from='{p}' is not a checkpoint: {STATE_FILE} is missing",
            "give a folder written by rlport train, e.g. trainer.resume_from=outputs/rlport/checkpoints/step_50",
        )
    data = json.loads(state_file.read_text())
    return TrainerState(
        step=int(data["step"]),
        sampler=dict(data["sampler"]),
        config=dict(data.get("config", {})),
        version=str(data.get("rlport_version", "")),
    )
