"""Where a run's metrics go: ``trainer.logger=[console,jsonl,tensorboard,wandb,mlflow,swanlab]``.

``console`` prints the line of each step; ``jsonl`` appends to ``output_dir/metrics.jsonl``
(:class:`rlport.train.tracking.metrics.MetricsLog`); the others go through their own libraries, each an
optional extra (``pip install "rlport[wandb]"``) whose absence is an error naming that command
before any work starts. Names are ``trainer.project_name`` and ``trainer.experiment_name`` (the
output folder's name when empty), as in verl:

- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` writing to ``output_dir/tensorboard``;
- ``wandb``: ``wandb.init(project, name, config, dir=output_dir)``; ``WANDB_MODE=offline`` keeps it
  local;
- ``mlflow``: an experiment named after the project, a run after the experiment, at
  ``MLFLOW_TRACKING_URI`` or ``sqlite:///output_dir/mlflow.db``;
- ``swanlab``: ``swanlab.init(project, experiment_name, config, logdir=output_dir/swanlog)``;
  ``SWANLAB_MODE=local`` or ``offline`` keeps it local.

Validation answers (``trainer.log_val_generations``) go to each library as it shows text: a
markdown table in tensorboard's text tab, a ``wandb.Table``, an mlflow JSON table artifact (``val/generations/step_N.json``) and
``swanlab.Text`` items, each under ``val/generations``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from rlport.extras import import_optional, require

#: the columns of a logged validation answer, in order
SAMPLE_COLUMNS = ("data_source", "prompt", "response", "ground_truth", "score")
SAMPLES_KEY = "val/generations"


class Logger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None: ...

    def close(self) -> None: ...


#: logger name -> the extra that installs it (console and jsonl need nothing)
EXTRA_OF = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "swanlab": "swanlab"}


def check_installed(names: list[str]) -> None:
    """Every library the chosen loggers need is installed (checked without importing them)."""
    for name in names:
        if name in EXTRA_OF:
            require(EXTRA_OF[name], purpose=f"trainer.logger={name}")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}


def _rows(samples: list[dict[str, Any]]) -> list[list[Any]]:
    """The table rows; a ground truth of any shape (a list, a mapping) is shown as its text."""
    return [[str(s[c]) if c == "ground_truth" else s[c] for c in SAMPLE_COLUMNS] for s in samples]


def markdown_table(samples: list[dict[str, Any]]) -> str:
    """The answers as a markdown table (tensorboard renders its text tab as markdown); pipes and
    line breaks inside a cell are escaped so every answer stays one row."""

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in _rows(samples)]
    return "\n".join(lines)


class TensorBoard:
    def __init__(self, folder: Path) -> None:
        import_optional("tensorboard", "tensorboard", purpose="trainer.logger=tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        self.writer.add_text(SAMPLES_KEY, markdown_table(samples), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Wandb:
    def __init__(self, project: str, name: str, config: dict[str, Any], folder: Path) -> None:
        wandb = import_optional("wandb", "wandb", purpose="trainer.logger=wandb")
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, config=config, dir=str(folder), reinit="create_new")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(_numbers(metrics), step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        import wandb

        table = wandb.Table(columns=list(SAMPLE_COLUMNS), data=_rows(samples))
        self.run.log({SAMPLES_KEY: table}, step=step)

    def close(self) -> None:
        self.run.finish()


class Mlflow:
    def __init__(self, project: str, name: str, config: dict[str, Any], folder: Path) -> None:
        self.mlflow = import_optional("mlflow", "mlflow", purpose="trainer.logger=mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.mlflow.set_tracking_uri(uri)
        self.mlflow.set_experiment(project)
        self.run = self.mlflow.start_run(run_name=name)
        self.mlflow.log_params(_flat(config))

    def log(self, metrics: dict[str, float], step: int) -> None:
        # mlflow allows letters, digits, _ - . space : / in names
        safe = {k.replace("@", "_at_"): v for k, v in _numbers(metrics).items()}
        self.mlflow.log_metrics(safe, step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        # mlflow's table layout (columns, data), written with log_dict: log_table needs pandas
        table = {"columns": list(SAMPLE_COLUMNS), "data": _rows(samples)}
        self.mlflow.log_dict(table, f"{SAMPLES_KEY}/step_{step}.json")

    def close(self) -> None:
        self.mlflow.end_run()


class Swanlab:
    def __init__(self, project: str, name: str, config: dict[str, Any], folder: Path) -> None:
        self.swanlab = import_optional("swanlab", "swanlab", purpose="trainer.logger=swanlab")
        self.swanlab.init(
            project=project,
            experiment_name=name,
            config=config,
            logdir=str(folder / "swanlog"),
            mode=os.environ.get("SWANLAB_MODE", "cloud"),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(_numbers(metrics), step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        texts = [
            self.swanlab.Text(s["response"], caption=f"{s['data_source']} score {s['score']}: {s['prompt']}")
            for s in samples
        ]
        self.swanlab.log({SAMPLES_KEY: texts}, step=step)

    def close(self) -> None:
        self.swanlab.finish()


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:250]  # mlflow's limit for a parameter value
    return out


def open_loggers(
    names: list[str], *, project: str, name: str, config: dict[str, Any], folder: Path
) -> list[Logger]:
    """The library loggers among ``names`` (console and jsonl are the trainer's own), opened."""
    out: list[Logger] = []
    for logger in names:
        if logger == "tensorboard":
            out.append(TensorBoard(folder / "tensorboard"))
        elif logger == "wandb":
            out.append(Wandb(project, name, config, folder))
        elif logger == "mlflow":
            out.append(Mlflow(project, name, config, folder))
        elif logger == "swanlab":
            out.append(Swanlab(project, name, config, folder))
    return out
