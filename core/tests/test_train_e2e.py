"""`rlport train` end to end on the demo: metrics, reward curve, checkpoints, resume, bad input,
weight sync, and two data-parallel workers through Ray."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from rlport.errors import ConfigError, EngineError, RlportError
from rlport.train.cli import build_config, run_train
from rlport.train.driver.trainer import Trainer

TINY = [
    "trainer.progress=false",
    "data.train_batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "actor.mini_batches=2",
]


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _run(out: Path, *extra: str) -> Any:
    cfg = build_config([*TINY, f"trainer.output_dir={out}", *extra], demo=True)
    return Trainer(cfg, console=_console()).fit()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rows(out: Path, *extra: str) -> list[dict[str, Any]]:
    return _lines(_run(out, *extra).metrics_path)


def test_demo_trains_saves_and_resumes(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "run"
    res = _run(out, "trainer.steps=2")
    rows = _lines(res.metrics_path)
    assert [r["step"] for r in rows] == [1, 2]
    for key in (
        "reward/mean",
        "reward/std",
        "actor/pg_loss",
        "actor/kl",
        "actor/entropy",
        "rollout/logprob_mismatch",
        "perf/rollout_tokens_per_s",
        "time/rollout",
        "time/logprob",
        "time/update",
        "time/sync",
        "time/sleep",
        "time/step",
    ):
        assert key in rows[0], key
    assert rows[0]["actor/updates"] == 2.0  # actor.mini_batches=2
    # the engine serves what the actor computes, also after the first update (weights were synced)
    assert rows[1]["rollout/logprob_mismatch"] < 1e-4
    assert res.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ckpt = out / "checkpoints" / "step_2"
    assert res.checkpoint == ckpt
    for name in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["sampler"] == {"epoch": 0, "cursor": 8}
    before = load_file(out / "model" / "model.safetensors")
    after = load_file(ckpt / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before)  # GRPO changed the weights

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(ckpt)).num_parameters() > 0

    # resume: continues at step 3 from the checkpoint, with offloading and a KL to the original model
    res2 = _run(
        out,
        "trainer.steps=3",
        f"trainer.resume_from={ckpt}",
        "actor.offload=true",
        "algorithm.use_kl_loss=true",
    )
    assert [h["step"] for h in res2.history] == [3]
    assert res2.history[0]["actor/kl"] > 0  # the reference is the untrained model, the actor is not
    assert res2.workers[0]["offload"] is True
    assert [r["step"] for r in _lines(res2.metrics_path)] == [1, 2, 3]
    state3 = json.loads((out / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state3["step"] == 3 and state3["sampler"]["cursor"] == 12


def test_without_weight_sync_the_engine_drifts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mismatch metric really detects an engine serving stale weights."""
    from rlport.train.workers import worker as workers

    monkeypatch.setattr(workers.Worker, "push_weights", lambda self: None)
    res = _run(tmp_path / "run", "trainer.steps=2", "actor.lr=1e-2")
    assert res.history[1]["rollout/logprob_mismatch"] > 1e-3


@pytest.fixture
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any worker (model load) starts."""
    from rlport.train.workers import worker as workers

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker started before the input was validated")

    monkeypatch.setattr(workers.Worker, "__init__", refuse)


def _demo_paths(tmp_path: Path) -> list[str]:
    cfg = build_config([*TINY, f"trainer.output_dir={tmp_path / 'demo'}"], demo=True)
    return [
        f"model.path={cfg.model.path}",
        f"data.train_files=[{cfg.data.train_files[0]}]",
        *TINY,
        f"trainer.output_dir={tmp_path / 'out'}",
    ]


@pytest.mark.usefixtures("no_workers")
def test_bad_input_fails_before_work(tmp_path: Path) -> None:
    good = _demo_paths(tmp_path)
    bad_model = tmp_path / "no_weights"
    bad_model.mkdir()
    (bad_model / "config.json").write_text("{}")
    cases: list[tuple[list[str], type[RlportError], str, str]] = [
        (
            [f"data.train_files=[{tmp_path / 'missing.parquet'}]"],
            ConfigError,
            "missing.parquet' does not exist",
            "data.train_files=",
        ),
        ([f"model.path={bad_model}"], ConfigError, "has config.json but no weights", "save_pretrained"),
        ([f"model.path={tmp_path / 'nowhere'}"], ConfigError, "is not a folder", "model.path="),
        (["rollout.engine=nope"], EngineError, "'nope' is not offered", "rollout.engine=hf"),
        (
            [f"trainer.resume_from={tmp_path / 'demo' / 'model'}"],
            ConfigError,
            "trainer_state.json is missing",
            "trainer.resume_from=",
        ),
    ]
    for extra, kind, message, fix in cases:
        cfg = build_config([*good, *extra], demo=False)
        with pytest.raises(kind) as err:
            Trainer(cfg, console=_console())
        assert message in err.value.message, (extra, err.value.message)
        assert fix in err.value.fix, (extra, err.value.fix)
    # through the command: exit code 2, the error and its fix printed, no traceback
    console = _console()
    assert run_train([*good, "trainer.steps=lots"], console=console) == 2
    text = console.file.getvalue()
    assert "config key 'trainer.steps' expects an integer, got 'lots'" in text
    assert "fix: rlport train trainer.steps=50" in text


@pytest.mark.usefixtures("no_workers")
def test_uninstalled_engine_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    # pytest puts this tests folder on sys.path, where a folder named vllm/ would pass for the package
    here = Path(__file__).parent.resolve()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != here])
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; this checks the message when it is not")
    cfg = build_config([*_demo_paths(tmp_path), "rollout.engine=vllm"], demo=False)
    with pytest.raises(EngineError) as err:
        Trainer(cfg, console=_console())
    assert "'vllm' needs vllm, which is not installed" in err.value.message
    assert err.value.fix == 'pip install "rlport[vllm]"'


def test_two_workers_through_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    res = _run(tmp_path / "run", "trainer.steps=2", "trainer.workers=2", "trainer.ray_num_cpus=2")
    ranks = sorted(w["rank"] for w in res.workers)
    assert ranks == [0, 1]
    assert len({w["pid"] for w in res.workers}) == 2
    assert all(w["collectives_backend"] == "gloo" and w["device_plugin"] == "cpu" for w in res.workers)
    assert all(any("all_reduce exact" in p for p in w["preflight"]) for w in res.workers)
    assert [h["workers/weights_in_sync"] for h in res.history] == [1.0, 1.0]
    assert [r["step"] for r in _lines(res.metrics_path)] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "model.safetensors").is_file()


def test_default_demo_reward_rises_clearly(tmp_path: Path) -> None:
    """The README's main job, with its default settings: GRPO alone lifts the reward from chance to
    the README's floor, and no deprecation warning is raised with rlport's code on the stack (a
    deprecated call stops working in a later transformers or torch)."""
    import rlport.train.demo as demo

    cfg = build_config(["trainer.progress=false", f"trainer.output_dir={tmp_path / 'demo'}"], demo=True)
    with deprecations_from_rlport() as raised:
        result = Trainer(cfg, console=_console()).fit()
    assert not raised, "\n".join(raised)
    rewards = [row["reward/mean"] for row in _lines(result.metrics_path)]
    assert len(rewards) == cfg.trainer.steps
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.2, f"the untrained model should score near chance, got {first:.3f}"
    assert last >= demo.REWARD_FLOOR, f"reward rose only from {first:.3f} to {last:.3f}"


@contextlib.contextmanager
def deprecations_from_rlport() -> Iterator[list[str]]:
    """Every FutureWarning / DeprecationWarning raised while rlport's own code is on the stack (so a
    library's deprecation of how rlport calls it counts, wherever the library points the warning)."""
    import traceback
    import warnings

    import rlport

    root = str(Path(rlport.__file__).parent)
    raised: list[str] = []

    def record(message: Any, category: type, filename: str, lineno: int, *_: Any) -> None:
        if not issubclass(category, (FutureWarning, DeprecationWarning)):
            return
        ours = [f for f in traceback.extract_stack() if f.filename.startswith(root)]
        if ours or filename.startswith(root):
            where = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else f"{filename}:{lineno}"
            raised.append(f"{category.__name__} at {filename}:{lineno} (from {where}): {message}")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        yield raised


@pytest.mark.usefixtures("no_workers")
def test_batch_larger_than_the_data_names_both_numbers(tmp_path: Path) -> None:
    good = _demo_paths(tmp_path)  # 16 training prompts
    cfg = build_config([*good, "data.train_batch_size=24"], demo=False)
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, console=_console())
    assert "data.train_batch_size=24 is larger than the training data: 16 prompts" in err.value.message
    assert "data.train_batch_size=16" in err.value.fix


@pytest.mark.usefixtures("no_workers")
def test_epochs_and_total_steps_set_the_steps(tmp_path: Path) -> None:
    good = _demo_paths(tmp_path)
    cfg = build_config([*good, "data.train_batch_size=8", "trainer.total_epochs=3"], demo=False)
    cfg.trainer.steps = 999
    from rlport.train.driver.trainer import plan_steps

    plan_steps(cfg, prompts=16, dropped=0, val_prompts=0)
    assert cfg.trainer.steps == 6  # 3 epochs x 16 // 8
    cfg.trainer.total_training_steps = 4
    plan_steps(cfg, prompts=16, dropped=0, val_prompts=0)
    assert cfg.trainer.steps == 4
    cfg = build_config([*good, "trainer.test_freq=2"], demo=False)
    with pytest.raises(ConfigError, match=r"data\.val_files is empty"):
        Trainer(cfg, console=_console())
    for asked, fix in (
        (["trainer.val_only=true"], "trainer.val_only=false"),
        (
            ["trainer.test_freq=2", "trainer.val_before_train=true"],
            "trainer.test_freq=0 trainer.val_before_train=false",
        ),
    ):
        cfg = build_config([*good, *asked], demo=False)
        with pytest.raises(ConfigError) as err:
            plan_steps(cfg, prompts=16, dropped=0, val_prompts=0)
        assert " and ".join(asked) + " ask for validation" in err.value.message
        assert "data.val_files=[test.parquet]" in err.value.fix and fix in err.value.fix
    cfg = build_config([*good, "trainer.log_val_generations=4"], demo=False)
    with pytest.raises(ConfigError, match=r"trainer\.log_val_generations=4 logs validation answers, but no"):
        plan_steps(cfg, prompts=16, dropped=0, val_prompts=0)


def _test_file(tmp_path: Path) -> Path:
    cfg = build_config([*TINY, f"trainer.output_dir={tmp_path / 'demo'}"], demo=True)
    return Path(cfg.data.train_files[0]).with_name("test.parquet")


def test_validation_before_and_during_training(tmp_path: Path) -> None:
    """Greedy validation reward, overall and per data source, before training, every
    trainer.test_freq steps and after the last; logged to metrics.jsonl beside the steps. With
    trainer.log_val_generations=3, the answers to the same 3 prompts at each validation go to
    val_generations.jsonl, each scored as the reward scores it."""
    test_file = _test_file(tmp_path)
    res = _run(
        tmp_path / "run",
        "trainer.steps=3",
        f"data.val_files=[{test_file}]",
        "trainer.test_freq=2",
        "trainer.val_before_train=true",
        "trainer.log_val_generations=3",
        "data.val_max_samples=3",
        f"trainer.rollout_data_dir={tmp_path / 'rollouts'}",
        f"trainer.validation_data_dir={tmp_path / 'val'}",
        "trainer.save_every=1",
        "trainer.max_checkpoints_to_keep=2",
    )
    assert [v["step"] for v in res.validation] == [0, 2, 3]
    # verl's dumps: each step's 4 prompts x 4 samples, every validation's 3 answers (of 4)
    for folder, steps, rows in ((tmp_path / "rollouts", [1, 2, 3], 16), (tmp_path / "val", [0, 2, 3], 3)):
        assert sorted(int(p.stem) for p in folder.glob("*.jsonl")) == steps
        dump = _lines(folder / "2.jsonl")
        assert len(dump) == rows and all(set(r) == {"input", "output", "gts", "score", "step"} for r in dump)
        assert {r["step"] for r in dump} == {2} and all(0.0 <= r["score"] <= 1.0 for r in dump)
    scores = [r["score"] for r in _lines(tmp_path / "rollouts" / "3.jsonl")]
    assert sum(scores) / len(scores) == pytest.approx(res.history[2]["reward/mean"])
    # trainer.max_checkpoints_to_keep=2: step 1's checkpoint was deleted after step 3's was written
    assert sorted(p.name for p in (res.output_dir / "checkpoints").glob("step_*")) == ["step_2", "step_3"]
    for v in res.validation:
        assert 0.0 <= v["val/reward/mean"] <= 1.0
        assert v["val/rlport/repeat_letter/reward/mean"] == v["val/reward/mean"]  # one data source
    rows = _lines(res.metrics_path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "val/reward/mean" in rows[0] and "reward/mean" not in rows[0]
    assert "val/reward/mean" in rows[2] and "val/reward/mean" not in rows[1]

    answers = _lines(res.output_dir / "val_generations.jsonl")
    assert [a["step"] for a in answers] == [0, 0, 0, 2, 2, 2, 3, 3, 3]
    prompts = [a["prompt"] for a in answers]
    assert prompts[0:3] == prompts[3:6] == prompts[6:9] and len(set(prompts[:3])) == 3
    assert all(a["data_source"] == "rlport/repeat_letter" and a["response"] for a in answers)
    # the 3 logged answers of a validation are 3 of its answers (here all of them: 3 validated)
    for v in res.validation:
        dumped = _lines(tmp_path / "val" / f"{v['step']}.jsonl")
        logged = [(a["prompt"], a["response"], a["score"]) for a in answers if a["step"] == v["step"]]
        assert sorted(logged) == sorted((d["input"], d["output"], d["score"]) for d in dumped)
        assert sum(d["score"] for d in dumped) / 3 == pytest.approx(v["val/reward/mean"])


def test_validation_params_follow_val_kwargs() -> None:
    from rlport.train.config.schema import ValKwargsConfig
    from rlport.train.driver.evaluate import validation_params

    greedy = validation_params(ValKwargsConfig(), 8, [2], seed=5)
    assert (greedy.n, greedy.temperature, greedy.top_p, greedy.top_k) == (1, 0.0, 1.0, 0)
    sampled = validation_params(
        ValKwargsConfig(do_sample=True, temperature=0.7, top_p=0.9, top_k=5, n=4), 8, [2], 5
    )
    assert (sampled.n, sampled.temperature, sampled.top_p, sampled.top_k) == (4, 0.7, 0.9, 5)
    # do_sample=false is greedy whatever the temperature, as in verl; n copies are still answered
    off = validation_params(ValKwargsConfig(do_sample=False, temperature=0.7, top_k=5, n=2), 8, [2], 5)
    assert (off.n, off.temperature, off.top_k) == (2, 0.0, 0)


def test_best_and_worst_of_n_by_hand() -> None:
    from rlport.train.driver.evaluate import _reward_metrics

    m = _reward_metrics("val/reward", [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.5]], 3)
    assert m == pytest.approx(
        {"val/reward/mean": 3.5 / 9, "val/reward/best@3": 2 / 3, "val/reward/worst@3": 0.5 / 3}
    )
    assert _reward_metrics("val/reward", [[1.0], [0.0]], 1) == {"val/reward/mean": 0.5}


def test_sampled_validation_answers_n_per_prompt(tmp_path: Path) -> None:
    """rollout.val_kwargs.do_sample=true n=3: three sampled answers per validation prompt, the mean
    over all of them, and best@3 >= mean >= worst@3 overall and per data source."""
    res = _run(
        tmp_path / "run",
        "trainer.steps=1",
        f"data.val_files=[{_test_file(tmp_path)}]",
        "trainer.test_freq=1",
        "rollout.val_kwargs.do_sample=true",
        "rollout.val_kwargs.temperature=1.0",
        "rollout.val_kwargs.n=3",
        f"trainer.validation_data_dir={tmp_path / 'val'}",
    )
    (v,) = res.validation
    dumped = _lines(tmp_path / "val" / "1.jsonl")
    assert len(dumped) == 4 * 3  # the demo's 4 validation prompts
    assert v["val/reward/mean"] == pytest.approx(sum(d["score"] for d in dumped) / 12)
    for prefix in ("val/reward", "val/rlport/repeat_letter/reward"):
        assert v[f"{prefix}/best@3"] >= v[f"{prefix}/mean"] >= v[f"{prefix}/worst@3"]
    by_prompt: dict[str, set[str]] = {}
    for d in dumped:
        by_prompt.setdefault(d["input"], set()).add(d["output"])
    assert len(by_prompt) == 4 and any(len(outs) > 1 for outs in by_prompt.values())  # sampled, not greedy


def test_val_only_validates_once_and_trains_nothing(tmp_path: Path) -> None:
    """trainer.val_only: one validation of the given model, then the run stops: no update, no
    checkpoint, no reward curve; the metrics hold only the validation."""
    out = tmp_path / "run"
    console = _console()
    cfg = build_config(
        [
            *TINY,
            f"trainer.output_dir={out}",
            f"data.val_files=[{_test_file(tmp_path)}]",
            "trainer.val_only=true",
            "trainer.steps=5",
            "trainer.log_val_generations=2",
        ],
        demo=True,
    )
    res = Trainer(cfg, console=console).fit()
    assert res.history == [] and res.checkpoint is None
    assert [v["step"] for v in res.validation] == [0]
    assert [r["step"] for r in _lines(res.metrics_path)] == [0]
    assert not (out / "checkpoints").exists() and not res.plot_path.exists()
    assert len(_lines(out / "val_generations.jsonl")) == 2
    text = console.file.getvalue()
    assert "validation of step 0: reward" in text and "done: validation only" in text


def test_input_errors_come_before_the_startup_summary(tmp_path: Path) -> None:
    """A wrong path or data source fails before `rlport.init()` prints its summary (and before
    torch is imported), so the error is the first thing on screen."""
    import os
    import subprocess
    import sys

    good = _demo_paths(tmp_path)
    env = {**os.environ, "RLPORT_SUMMARY": "1", "RAY_AUTH_MODE": "disabled"}
    for extra, message in (
        ([f"data.train_files=[{tmp_path / 'missing.parquet'}]"], "missing.parquet' does not exist"),
        ([f"data.val_files=[{tmp_path / 'nope.parquet'}]"], "(data.val_files)"),
        (["trainer.logger=[console,nosuch]"], "'trainer.logger'"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "rlport.train", *good, *extra],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
        assert "hooks" not in proc.stderr and "plugin" not in proc.stderr.split("error:")[0], proc.stderr


@pytest.mark.slow
def test_critic_warmup_and_the_critic_checkpoint(tmp_path: Path) -> None:
    """PPO on the demo: during trainer.critic_warmup_steps only the critic learns (no actor
    metrics); the critic is saved beside the actor with its optimizer state, both load back, and
    a resumed run trains it on."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    rows = _rows(out, "algorithm.adv_estimator=gae", "trainer.critic_warmup_steps=1", "trainer.steps=2")
    assert "actor/pg_loss" not in rows[0] and "critic/vf_loss" in rows[0]
    assert "actor/pg_loss" in rows[1] and rows[1]["critic/updates"] == 2
    step = out / "checkpoints" / "step_2"
    critic = load_file(step / "critic" / "model.safetensors")
    assert "score.weight" in critic and critic["score.weight"].shape[0] == 1
    assert (step / "critic" / "optimizer.pt").is_file()
    import rlport
    from rlport.train.models.critic import Critic

    cfg = build_config([*TINY, f"trainer.output_dir={out}", "algorithm.adv_estimator=gae"], demo=True)
    loaded = Critic(cfg, device="cpu", rt=rlport.init(), resume_from=step / "critic")
    got = dict(loaded.full_parameters())
    assert "score.weight" in got and all(
        torch.equal(got[name], t) for name, t in critic.items() if name in got
    )
    assert loaded.optimizer.state, "the critic's AdamW state was not restored"
    resumed = _rows(out, "algorithm.adv_estimator=gae", "trainer.steps=3", "trainer.resume_from=latest")
    assert [r["step"] for r in resumed] == [1, 2, 3]  # metrics.jsonl keeps the earlier steps
    again = load_file(out / "checkpoints" / "step_3" / "critic" / "model.safetensors")
    assert not torch.equal(again["score.weight"], critic["score.weight"])  # step 3 trained it on


@pytest.mark.slow
def test_adaptive_kl_in_the_reward_on_the_demo(tmp_path: Path) -> None:
    """GRPO with the KL in the reward: on step 1 the actor is the reference (KL 0), so the adaptive
    controller lowers the coefficient by the clipped error 0.2 x 16 rollouts / horizon; step 2's
    KL is above 0 after an update. The coefficient reached is checkpointed: a resumed step 3
    starts from it, not from kl_coef again."""
    out = tmp_path / "run"
    kl = (
        "algorithm.use_kl_in_reward=true",
        "algorithm.kl_penalty=low_var_kl",
        "algorithm.kl_ctrl.type=adaptive",
        "algorithm.kl_ctrl.kl_coef=0.01",
        "algorithm.kl_ctrl.target_kl=0.1",
        "algorithm.kl_ctrl.horizon=100",
    )
    rows = _rows(out, *kl, "trainer.steps=2")
    assert rows[0]["actor/reward_kl_penalty"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["actor/reward_kl_penalty_coeff"] == pytest.approx(0.01)
    assert rows[1]["actor/reward_kl_penalty_coeff"] == pytest.approx(0.01 * (1 - 0.2 * 16 / 100))
    assert rows[1]["actor/reward_kl_penalty"] > 0
    error = min(0.2, max(-0.2, rows[1]["actor/reward_kl_penalty"] / 0.1 - 1))
    reached = rows[1]["actor/reward_kl_penalty_coeff"] * (1 + error * 16 / 100)
    state = json.loads((out / "checkpoints" / "step_2" / "trainer_state.json").read_text())
    assert state["kl_coef"] == pytest.approx(reached)
    resumed = _rows(out, *kl, "trainer.steps=3", "trainer.resume_from=latest")
    assert resumed[2]["actor/reward_kl_penalty_coeff"] == pytest.approx(reached)


@pytest.mark.slow
def test_demo_reward_rises_with_ppo(tmp_path: Path) -> None:
    """`rlport train --demo algorithm.adv_estimator=gae`, 30 steps: PPO with a critic lifts the
    reward from chance too (measured 0.016 over the first 5 steps, 0.383 over the last 5;
    the bar, a rise of 0.15, leaves about half of that as margin)."""
    cfg = build_config(
        [
            "trainer.progress=false",
            "algorithm.adv_estimator=gae",
            "trainer.steps=30",
            f"trainer.output_dir={tmp_path / 'demo'}",
        ],
        demo=True,
    )
    result = Trainer(cfg, console=_console()).fit()
    rows = _lines(result.metrics_path)
    rewards = [row["reward/mean"] for row in rows]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.1, f"the untrained model should score near chance, got {first:.3f}"
    assert last - first >= 0.15, f"reward rose only from {first:.3f} to {last:.3f}"
    assert rows[-1]["critic/vf_loss"] < rows[0]["critic/vf_loss"], "the critic did not learn"
