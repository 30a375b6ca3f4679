"""The ``verl.trainer.main_ppo`` commands of the documents rlport was started from, run to the end.

``data/verl_doc_commands/`` holds each command as its document writes it (its README names the
document, path and commit). Each is read as the shell would pass it
(``benchmarks/verl_example_commands.py``'s reader: the script's own variables substituted, one
device per worker), then only paths, the model, sizes and the engine are replaced (``LOCAL``);
every other key goes to ``python -m rlport.train`` verbatim, deprecated ones included
(``data.val_batch_size``, ``...ref.log_prob_micro_batch_size``, ``critic.ppo_micro_batch_size``).
A run must reach its last step, validate, and leave a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from demo_runs import benchmark, train_process

from rlport.errors import ConfigError
from rlport.train.config.load import load_config

HERE = Path(__file__).resolve().parent
COMMANDS = HERE / "data" / "verl_doc_commands"
RUN = sorted(p for p in COMMANDS.glob("*.sh") if p.name != "sglang_dev_ppo_early.sh")


def _command(path: Path) -> list[str]:
    """The overrides a verl script passes to main_ppo, read as benchmarks/verl_example_commands.py
    reads verl's own examples."""
    args = benchmark("verl_example_commands").command_of(path.read_text())
    assert args, f"{path.name}: no main_ppo command"
    return args


def _local(model: Path, train: Path, test: Path) -> dict[str, str]:
    """What a run here replaces: paths, the model, sizes (16 prompts, 8 per step: 2 steps; one
    machine), and the engine (hf: SGLang cannot be installed beside torch 2.13)."""
    return {
        "data.train_files": str(train),
        "data.val_files": str(test),
        "actor_rollout_ref.model.path": str(model),
        "critic.model.path": str(model),
        "data.train_batch_size": "8",
        "data.val_batch_size": "3",  # 4 validation prompts: two engine calls, so batching is exercised
        "data.max_prompt_length": "64",
        "data.max_response_length": "8",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "4",
        "actor_rollout_ref.rollout.name": "hf",
        "actor_rollout_ref.rollout.n": "2",
        "trainer.total_epochs": "1",
        "trainer.test_freq": "2",
        "trainer.nnodes": "1",  # one machine (the reader already makes it one device per node)
    }


def test_every_document_command_is_here() -> None:
    """The README lists each command file, and each is one main_ppo command of the documents."""
    readme = (COMMANDS / "README.md").read_text()
    files = sorted(COMMANDS.glob("*.sh"))
    assert len(files) >= 6
    for f in files:
        assert f.name in readme, f.name
        assert f.read_text().startswith("# source: "), f.name
        assert "verl.trainer.main_ppo" in f.read_text()


def test_the_documents_deprecated_keys_load_as_verl_reads_them() -> None:
    """The dev release's PPO command sets three keys verl deprecates and still reads: all three are
    taken, global counts divided by the workers (4 devices per node in the document)."""
    notes: list[str] = []
    args = [a for a in _command(COMMANDS / "sglang_dev_ppo.sh") if not a.startswith("data.")]
    cfg = load_config([*args, "trainer.n_gpus_per_node=4"], notes=notes)
    assert cfg.critic.micro_batch_size == 1  # critic.ppo_micro_batch_size=4 over 4 workers
    assert any("actor_rollout_ref.ref.log_prob_micro_batch_size=1 is deprecated" in n for n in notes)
    cfg = load_config([*args, "data.val_batch_size=1312"])
    assert cfg.data.val_batch_size == 1312


def test_the_early_dev_release_command_names_keys_verl_removed() -> None:
    """The dev release's first revision sets fsdp_config.grad_offload, which verl 0.9.1 no longer
    has (verl refuses it too): one message names both keys, with the nearest key verl has."""
    with pytest.raises(ConfigError) as err:
        load_config([a for a in _command(COMMANDS / "sglang_dev_ppo_early.sh") if not a.startswith("data.")])
    assert "actor_rollout_ref.actor.fsdp_config.grad_offload" in err.value.message
    assert "critic.model.fsdp_config.grad_offload" in err.value.message


@pytest.mark.slow
@pytest.mark.parametrize("script", RUN, ids=[p.stem for p in RUN])
def test_a_document_command_runs_to_the_end(script: Path, tmp_path: Path) -> None:
    from rlport.train.demo import prepare_demo, write_demo_data

    model, train = prepare_demo(tmp_path / "demo", length=8)
    _, test = write_demo_data(tmp_path / "demo" / "data", length=8)
    local = _local(model, train, test)
    args, replaced = [], set()
    for word in _command(script):
        key = word.split("=", 1)[0].lstrip("+")
        if key in local:
            word, _ = f"{word.split('=', 1)[0]}={local[key]}", replaced.add(key)
        args.append(word)
    assert {"data.train_files", "actor_rollout_ref.model.path"} <= replaced
    log, out = train_process(args, tmp_path)
    assert "step 2/2" in log and "validation at step 2" in log, log[-3000:]
    assert (out / "checkpoints" / "step_2" / "model.safetensors").is_file()
    if any(a.startswith("critic.") for a in args):  # verl's PPO: the critic trained and was saved
        assert (out / "checkpoints" / "step_2" / "critic" / "model.safetensors").is_file()
