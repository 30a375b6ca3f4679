"""Checkpoints that survive faults: written aside and renamed into place, a process killed while
writing leaves nothing that passes for a checkpoint, ``resume_from=latest`` finds the newest
complete one, the data position comes back exactly, and FSDP's sharded model and optimizer state
(``torch.distributed.checkpoint``, two gloo ranks) resume bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from demo_runs import spawn_ranks
from test_train_strategies import _cfg, _samples, _tiny

from rlport.errors import ConfigError
from rlport.train import checkpoint
from rlport.train.data.prompts import Sampler


class _Tokenizer:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


def _save(out: Path, step: int, sampler: dict[str, int] | None = None) -> Path:
    with checkpoint.writing(out, step) as folder:
        (folder / "model.safetensors").write_bytes(b"weights")
        state = checkpoint.TrainerState(step=step, sampler=sampler or {"epoch": 0, "cursor": step}, config={})
        checkpoint.write_state(folder, state, _Tokenizer(), out / "no-model")
    return checkpoint.checkpoint_dir(out, step)


def test_a_checkpoint_appears_only_when_complete(tmp_path: Path) -> None:
    folder = _save(tmp_path, 2)
    assert folder.name == "step_2" and (folder / "model.safetensors").read_bytes() == b"weights"
    assert checkpoint.read_state(folder).step == 2
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step_2\n"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_2"]

    # a body that raises leaves nothing behind, and the old checkpoint untouched
    with pytest.raises(OSError), checkpoint.writing(tmp_path, 4) as partial:
        (partial / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_2"]

    # a body that never writes trainer_state.json commits nothing
    with (
        pytest.raises(RuntimeError, match=r"trainer_state\.json"),
        checkpoint.writing(tmp_path, 4) as partial,
    ):
        (partial / "model.safetensors").write_bytes(b"no state")
    assert checkpoint.latest(tmp_path) == folder

    # the same step written again replaces the old folder whole
    with checkpoint.writing(tmp_path, 2) as partial:
        state = checkpoint.TrainerState(step=2, sampler={"epoch": 1, "cursor": 0}, config={})
        checkpoint.write_state(partial, state, _Tokenizer(), tmp_path)
    assert not (folder / "model.safetensors").exists()
    assert checkpoint.read_state(folder).sampler == {"epoch": 1, "cursor": 0}
    assert checkpoint.stale_partials(tmp_path) == []


def test_a_process_killed_while_writing_leaves_only_a_partial_folder(tmp_path: Path) -> None:
    """A real process dies (``os._exit``: no cleanup runs) between the weights and the state."""
    _save(tmp_path, 2)
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from rlport.train import checkpoint
        with checkpoint.writing(Path({str(tmp_path)!r}), 4) as folder:
            (folder / "model.safetensors").write_bytes(b"half of the weights")
            os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=120, check=False)
    assert done.returncode == 9
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "step_4" not in names and any(n.startswith("step_4.partial-") for n in names), names
    stale = checkpoint.stale_partials(tmp_path)
    assert [p.name.split(".")[0] for p in stale] == ["step_4"]
    # resuming ignores it: the newest complete checkpoint is still step 2
    assert checkpoint.resolve_resume("latest", tmp_path) == tmp_path / "checkpoints" / "step_2"
    with pytest.raises(ConfigError) as err:
        checkpoint.resolve_resume(str(stale[0]), tmp_path)
    assert "a run stopped writing" in err.value.message and "trainer.resume_from=latest" in err.value.fix


def test_latest_is_the_highest_complete_step(tmp_path: Path) -> None:
    assert checkpoint.resolve_resume("latest", tmp_path) is None  # nothing yet: start at step 1
    assert checkpoint.resolve_resume("", tmp_path) is None
    for step in (9, 10, 2):
        _save(tmp_path, step)
    (tmp_path / "checkpoints" / "step_11").mkdir()  # a folder without trainer_state.json
    assert checkpoint.resolve_resume("latest", tmp_path) == tmp_path / "checkpoints" / "step_10"
    assert checkpoint.resolve_resume(str(tmp_path / "checkpoints" / "step_9"), tmp_path).name == "step_9"
    with pytest.raises(ConfigError, match=r"trainer_state\.json is missing"):
        checkpoint.resolve_resume(str(tmp_path / "checkpoints" / "step_11"), tmp_path)


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path: Path) -> None:
    """trainer.max_checkpoints_to_keep=2: the two highest complete steps stay (by step, not by
    the order they were written), a folder being written and an unfinished one are never touched,
    and 0 keeps all."""
    for step in (3, 1, 4, 2):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    (root / "step_5").mkdir()  # no trainer_state.json: not a checkpoint, not pruned
    (root / "step_6.partial-0123abcd").mkdir()
    assert checkpoint.prune(tmp_path, 0) == []
    removed = checkpoint.prune(tmp_path, 2)
    assert sorted(p.name for p in removed) == ["step_1", "step_2"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "step_3",
        "step_4",
        "step_5",
        "step_6.partial-0123abcd",
    ]
    assert checkpoint.resolve_resume("latest", tmp_path) == root / "step_4"
    assert checkpoint.prune(tmp_path, 2) == []


def test_the_data_position_resumes_exactly() -> None:
    """A sampler restored from a checkpoint's state draws the batches the uninterrupted one draws,
    across epoch boundaries (10 prompts, batches of 4, shuffled per epoch)."""
    straight = Sampler(10, 4, shuffle=True, seed=3)
    batches = [straight.next_batch() for _ in range(7)]
    for k in range(1, 7):
        first = Sampler(10, 4, shuffle=True, seed=3)
        for _ in range(k):
            first.next_batch()
        state = json.loads(json.dumps(first.state()))  # through trainer_state.json
        resumed = Sampler(10, 4, shuffle=True, seed=3)
        resumed.restore(state)
        assert [resumed.next_batch() for _ in range(7 - k)] == batches[k:], k
    assert batches[2] != batches[5]  # epochs reshuffle: the comparison is not trivially equal


def test_a_checkpoint_without_the_strategys_state_is_refused(tmp_path: Path) -> None:
    from rlport.train.strategies.replicated import ReplicatedStrategy

    cfg = {"actor": {"strategy": ""}, "trainer": {"workers": 2}}
    with checkpoint.writing(tmp_path, 1) as folder:
        state = checkpoint.TrainerState(step=1, sampler={"epoch": 0, "cursor": 0}, config=cfg)
        checkpoint.write_state(folder, state, _Tokenizer(), tmp_path)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ConfigError) as err:
        ReplicatedStrategy(1).load_training_state(model, opt, checkpoint.checkpoint_dir(tmp_path, 1))
    assert "has no optimizer.pt" in err.value.message and "actor.strategy=fsdp" in err.value.message
    assert err.value.fix.startswith(
        "resume with the strategy that wrote it: rlport train actor.strategy=fsdp"
    )


# -- FSDP: sharded state through torch.distributed.checkpoint, two gloo ranks ---------------------------


def _full_optimizer(actor: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        actor.model, actor.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}/"))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for i, v in enumerate(tree):
            out.update(_flat(v, f"{prefix}{i}/"))
        return out
    # a copy: on CPU the gathered state shares storage with the live optimizer's
    return {prefix.rstrip("/"): tree.clone() if isinstance(tree, torch.Tensor) else tree}


def _same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys whose values differ (tensors bit for bit: same dtype, shape and bytes)."""
    assert a.keys() == b.keys()
    bad = []
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(-1), y.view(-1)):
                bad.append(k)
        elif x != y:
            bad.append(k)
    return bad


def _dcp_rank(rank: int, model: Path, store: str, folder: Path, out: Path) -> None:
    import torch.distributed as dist

    import rlport
    from rlport.train.models.actor import Actor

    os.environ["RLPORT_SUMMARY"] = "0"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        rt = rlport.init()
        cfg = _cfg(model, "fsdp", 2)
        share = _samples()[rank * 4 : (rank + 1) * 4]
        trained = Actor(cfg, path=str(model), device="cpu", rank=rank, world=2, rt=rt)
        trained.update(share, trained.logprobs(share))
        if rank == 0:
            folder.mkdir()
        dist.barrier()
        trained.save(folder)
        dist.barrier()
        saved_w = {n: t.clone() for n, t in trained.full_parameters()}
        saved_o = _flat(_full_optimizer(trained))
        # Built from the *original* weights: only the DCP shards can bring the trained ones back.
        resumed = Actor(
            cfg, path=str(model), device="cpu", rank=rank, world=2, rt=rt, resume_from=str(folder)
        )
        bad_w = _same(saved_w, {n: t.clone() for n, t in resumed.full_parameters()})
        bad_o = _same(saved_o, _flat(_full_optimizer(resumed)))
        # and the next update is the same on both
        trained.update(share, trained.logprobs(share))
        resumed.update(share, resumed.logprobs(share))
        bad_next = _same(
            {n: t.clone() for n, t in trained.full_parameters()},
            {n: t.clone() for n, t in resumed.full_parameters()},
        )
        if rank == 0:
            out.write_text(
                json.dumps(
                    {
                        "weights": bad_w,
                        "optimizer": bad_o,
                        "next": bad_next,
                        "n_optimizer": len(saved_o),
                        "steps": [float(v) for k, v in saved_o.items() if k.endswith("/step")],
                    }
                )
            )
    finally:
        dist.destroy_process_group()


def test_fsdp_resumes_bit_exact_from_its_sharded_checkpoint(tmp_path: Path) -> None:

    model = _tiny(tmp_path)
    folder, out = tmp_path / "step_1", tmp_path / "result.json"
    spawn_ranks(_dcp_rank, (model, str(tmp_path / "store"), folder, out))
    result = json.loads(out.read_text())
    assert result["n_optimizer"] > 10 and result["steps"] and set(result["steps"]) == {1.0}
    assert result["weights"] == [] and result["optimizer"] == [] and result["next"] == []
    shards = sorted(p.name for p in (folder / checkpoint.SHARDED_DIR).iterdir())
    assert ".metadata" in shards and sum(n.endswith(".distcp") for n in shards) == 2  # one per rank
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(folder)).num_parameters() > 0  # and the HF folder
