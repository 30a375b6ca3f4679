"""verl's keys and commands in `rlport train`: every key of verl 0.9.1's ppo_trainer.yaml mapped,
accepted or refused with a reason; closest matches across both name sets; a whole verl config file;
docs/from-verl.md's key table in sync; verl's GRPO quickstart run to the end on the demo."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pytest
from demo_runs import train_process

from rlport.errors import ConfigError
from rlport.train.config.load import load_config
from rlport.train.config.show import verl_yaml
from rlport.train.config.verl import docs, table
from rlport.train.config.verl import translate as verl

DOC = Path(__file__).resolve().parents[2] / "docs" / "from-verl.md"


def test_every_verl_key_has_a_rule_and_its_default_loads() -> None:
    keys = verl.defaults()
    resolved = verl.defaults(resolved=True)  # as a --config file gives them
    assert len(keys) > 800  # the composed file, not a sample
    refused_defaults = []
    for key, value in keys.items():
        rule = verl.rule_for(key)
        assert rule is not None, key
        t = verl.translate(key, resolved[key], value)
        assert t is not None, key
        if t.refusal:
            refused_defaults.append(key)
    # the one default that asks for something rlport does not do: a 2-way tensor-parallel engine
    assert refused_defaults == ["actor_rollout_ref.rollout.tensor_model_parallel_size"]
    for rule in table.RULES:
        assert rule.kind in ("map", "accept", "refuse")
        if rule.kind != "map":
            assert rule.reason, rule.verl
        else:
            assert rule.rlport, rule.verl


def test_refusals_say_why_or_which_issue() -> None:
    cases = {
        "actor_rollout_ref.rollout.multi_turn.enable": True,
        "critic.model.lora_rank": 8,
        "algorithm.filter_groups.enable": True,
        "actor_rollout_ref.model.lora.rank": 8,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 2,
        "reward_model.enable": True,
    }
    for key, value in cases.items():
        t = verl.translate(key, value)
        assert t is not None and t.refusal, key
        assert (
            "rlport does not implement" in t.refusal
            or "not yet: issue" in t.refusal
            or "rlport counts" in t.refusal
        ), t
        assert key in t.refusal


def test_verl_keys_map_onto_rlport_settings() -> None:
    notes: list[str] = []
    cfg = load_config(
        [
            "actor_rollout_ref.actor.optim.lr=3e-6",
            "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.rollout.top_k=-1",
            "actor_rollout_ref.rollout.name=vllm",
            "data.max_response_length=64",
            "data.train_files='~/data/gsm8k/train.parquet'",  # Hydra's grammar wants ~ quoted
            "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.clip_ratio=0.3",
            "trainer.n_gpus_per_node=2",
            "trainer.save_freq=-1",
            "trainer.test_freq=-1",
            "+trainer.val_before_train=False",
            "trainer.val_only=True",
            "trainer.log_val_generations=5",
            "trainer.max_actor_ckpt_to_keep=3",
            "trainer.rollout_data_dir=/tmp/rollouts",
            "data.train_max_samples=-1",
            "data.val_max_samples=100",
            "+data.apply_chat_template_kwargs.enable_thinking=False",
            "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
            "actor_rollout_ref.rollout.val_kwargs.temperature=0.6",
            "actor_rollout_ref.rollout.val_kwargs.top_k=-1",
            "actor_rollout_ref.rollout.val_kwargs.n=4",
            "critic.fsdp.param_offload=True",
            "critic.fsdp.optimizer_offload=True",
            "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
            "actor_rollout_ref.ref.megatron.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
            "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=8192",
            "trainer.logger=['console','wandb']",
            "custom_reward_function.path=my_reward.py",
            "actor_rollout_ref.rollout.engine_kwargs.vllm.swap_space=2",
            "actor_rollout_ref.model.use_remove_padding=True",
        ],
        notes=notes,
    )
    assert cfg.actor.lr == pytest.approx(3e-6)
    assert (cfg.rollout.n, cfg.rollout.top_k, cfg.rollout.engine) == (4, 0, "vllm")
    assert cfg.rollout.max_new_tokens == 64
    assert cfg.data.train_files == [os.path.expanduser("~/data/gsm8k/train.parquet")]
    assert (cfg.actor.ppo_mini_batch_size, cfg.actor.mini_batches) == (4, 2)  # 8 prompts / 4 per update
    assert cfg.algorithm.clip_ratio_low == cfg.algorithm.clip_ratio_high == pytest.approx(0.3)
    assert cfg.trainer.workers == 2
    assert (cfg.trainer.save_every, cfg.trainer.test_freq, cfg.trainer.val_before_train) == (0, 0, False)
    assert (cfg.trainer.val_only, cfg.trainer.log_val_generations) == (True, 5)
    assert (cfg.trainer.max_checkpoints_to_keep, cfg.trainer.rollout_data_dir) == (3, "/tmp/rollouts")
    assert (cfg.data.train_max_samples, cfg.data.val_max_samples) == (0, 100)
    assert cfg.data.apply_chat_template_kwargs == {"enable_thinking": False}
    vk = cfg.rollout.val_kwargs
    assert (vk.do_sample, vk.temperature, vk.top_k, vk.n) == (True, pytest.approx(0.6), 0, 4)
    assert (cfg.critic.fsdp_config.param_offload, cfg.critic.fsdp_config.optimizer_offload) == (True, True)
    assert not cfg.actor.fsdp_config.optimizer_offload
    assert any("log_prob_use_dynamic_bsz" in n and "no effect" in n for n in notes)
    assert cfg.trainer.logger == ["console", "wandb"]
    assert (cfg.reward.path, cfg.reward.name) == ("my_reward.py", "compute_score")
    assert cfg.rollout.options == {"swap_space": 2}
    assert any("use_remove_padding" in n and "no effect" in n for n in notes)


def test_unknown_and_refused_keys_all_reported_with_correct_matches() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            [
                "actor_rollout_ref.actor.optim.lrr=1e-6",
                "actor_rollout_ref.rollout.nn=4",
                "trainer.step=5",
                "critic.model.lora_rank=8",
                "trainer.n_gpus_per_nod=1",
            ]
        )
    text = err.value.message
    assert text.startswith("5 problems")
    assert "did you mean 'actor_rollout_ref.actor.optim.lr' (verl's name for rlport's actor.lr)?" in text
    assert "did you mean 'actor_rollout_ref.rollout.n' (verl's name for rlport's rollout.n)?" in text
    assert "did you mean 'trainer.steps'?" in text
    assert "did you mean 'trainer.n_gpus_per_node'" in text
    assert "verl key 'critic.model.lora_rank' is refused (set to 8)" in text and "LoRA" in text
    assert "rollout.options" not in text


def test_a_whole_verl_config_file_loads(tmp_path: Path) -> None:
    """verl's composed defaults as a --config file: refused keys at verl's default pass; the
    mandatory rollout name, the tensor-parallel engine and PPO's default estimator stop it."""
    with pytest.raises(ConfigError) as err:
        load_config(config_file=verl.DEFAULTS_FILE)
    assert "actor_rollout_ref.rollout.name' is ???" in err.value.message
    assert "'actor_rollout_ref.rollout.tensor_model_parallel_size' is 2" in err.value.message
    cfg = load_config(
        [
            "actor_rollout_ref.rollout.name=hf",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "algorithm.adv_estimator=grpo",
            "actor_rollout_ref.rollout.n=4",
        ],
        config_file=verl.DEFAULTS_FILE,
    )
    assert cfg.actor.lr == pytest.approx(1e-6) and cfg.data.train_batch_size == 1024
    assert cfg.trainer.workers == 8 and cfg.actor.mini_batches == 4  # 1024 / 256
    assert cfg.trainer.output_dir == "checkpoints/verl_examples/gsm8k"  # verl's interpolation, resolved
    assert cfg.rollout.max_model_len == 512 + 512


def test_show_config_verl_view_loads_back(tmp_path: Path) -> None:
    text = verl_yaml(load_config(["actor.lr=2e-6", "rollout.top_k=0"]))
    assert "# rlport: actor.lr; AdamW learning rate" in text
    f = tmp_path / "verl.yaml"
    f.write_text(text)
    back = load_config(config_file=f)
    assert back.actor.lr == pytest.approx(2e-6) and back.rollout.top_k == 0


def test_doc_key_table_is_in_sync() -> None:
    text = DOC.read_text()
    in_doc = text.split("<!-- verl-key-table -->\n", 1)[1].split("<!-- /verl-key-table -->", 1)[0]
    assert in_doc == docs.markdown_table(), "regenerate the table in docs/from-verl.md"


def test_defaults_table_is_in_sync() -> None:
    """The doc's table of differing defaults is the generated one, and names the differences a
    verl user meets most (weight decay, validation before training, resuming)."""
    text = DOC.read_text()
    in_doc = text.split("<!-- verl-defaults-table -->\n", 1)[1].split("<!-- /verl-defaults-table -->", 1)[0]
    assert in_doc == docs.differences_table(), "regenerate the defaults table in docs/from-verl.md"
    rows = {key: (theirs, ours) for key, theirs, _, ours in docs.default_differences()}
    assert rows["actor_rollout_ref.actor.optim.weight_decay"] == (0.01, 0.0)
    assert rows["trainer.val_before_train"] == (True, False)
    assert rows["trainer.resume_mode"] == ("auto", "")
    assert rows["actor_rollout_ref.actor.clip_ratio_c"] == (3.0, 0.0)
    assert "actor_rollout_ref.actor.clip_ratio" not in rows  # the same default (0.2) in both
    assert not any(key == "data.train_files" for key in rows)  # a placeholder path, not a default


def _doc_command(tag: str) -> list[str]:
    block = re.search(rf"```bash {tag}\n(.*?)```", DOC.read_text(), re.S)
    assert block, tag
    words = block.group(1).replace("\\\n", " ").split()
    assert words[:3] == ["python3", "-m", "verl.trainer.main_ppo"]
    # the shell removes one level of quotes, as it would for verl
    return [w.replace("'", "") if w.count("'") == 2 else w for w in words[3:]]


def test_verl_ppo_quickstart_maps_onto_ppo() -> None:
    """verl's PPO quickstart names no estimator (verl's default is gae): its critic keys make the
    run PPO with a critic, each critic key on its rlport setting."""
    notes: list[str] = []
    cfg = load_config(_doc_command("verl-ppo"), notes=notes)
    assert cfg.algorithm.adv_estimator == "gae"
    assert any(n.startswith("algorithm.adv_estimator=gae") for n in notes), notes
    assert cfg.critic.path == "Qwen/Qwen2.5-0.5B-Instruct" and cfg.critic.lr == pytest.approx(1e-5)
    assert cfg.critic.micro_batch_size == 4 and cfg.critic.mini_batches == cfg.actor.mini_batches == 4
    assert cfg.algorithm.kl_ctrl.kl_coef == pytest.approx(0.001)
    assert (cfg.data.train_batch_size, cfg.trainer.total_epochs) == (256, 15)
    assert cfg.trainer.logger == ["console"] and cfg.rollout.engine == "vllm"
    # naming the estimator wins over the inference
    assert (
        load_config([*_doc_command("verl-ppo"), "algorithm.adv_estimator=grpo"]).algorithm.adv_estimator
        == "grpo"
    )
    # rlport's own critic keys do not change the estimator: only verl's names imply verl's default
    assert load_config(["critic.lr=1e-4"]).algorithm.adv_estimator == "grpo"
    # verl's critic warm-up counts steps from 1: N leaves the first N - 1 steps to the critic
    warm = load_config(["algorithm.adv_estimator=gae", "trainer.critic_warmup=3"])
    assert warm.trainer.critic_warmup_steps == 2


def _run_doc_command(tag: str, local: dict[str, str], tmp_path: Path) -> tuple[str, Path]:
    """docs/from-verl.md's command ``tag`` with the ``local`` values (every key must occur in it)
    through `python -m rlport.train`, wandb offline; its output and output folder."""
    args = []
    for word in _doc_command(tag):
        key = word.split("=", 1)[0]
        args.append(f"{key}={local[key]}" if key in local else word)
    assert set(local) <= {a.split("=", 1)[0] for a in args}
    return train_process(args, tmp_path)


def _demo_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    from rlport.train.demo import prepare_demo, write_demo_data

    model, train = prepare_demo(tmp_path / "demo", length=8)
    _, test = write_demo_data(tmp_path / "demo" / "data", length=8)
    return model, train, test


@pytest.mark.slow
def test_verl_grpo_quickstart_runs(tmp_path: Path) -> None:
    """docs/from-verl.md's verl GRPO command, with the local paths and small sizes its table
    lists, runs to the end through `python -m rlport.train` (wandb offline, read back)."""
    pytest.importorskip("wandb")
    model, train, test = _demo_files(tmp_path)
    local = {
        "data.train_files": str(train),
        "data.val_files": str(test),
        "actor_rollout_ref.model.path": str(model),
        "data.train_batch_size": "8",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "16",
        "actor_rollout_ref.rollout.n": "4",
        "data.max_prompt_length": "64",
        "data.max_response_length": "8",
        "actor_rollout_ref.rollout.name": "hf",
        "actor_rollout_ref.rollout.tensor_model_parallel_size": "1",
        "trainer.n_gpus_per_node": "1",
        "trainer.total_epochs": "1",
        "trainer.test_freq": "1",
    }
    log, out = _run_doc_command("verl-grpo", local, tmp_path)
    assert "step 2/2" in log and "validation at step 2" in log
    assert "note: actor_rollout_ref.model.use_remove_padding=True" in log
    assert (out / "checkpoints" / "step_2" / "model.safetensors").is_file()
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert runs, list(out.rglob("*"))[:20]


@pytest.mark.slow
def test_verl_ppo_quickstart_runs(tmp_path: Path) -> None:
    """docs/from-verl.md's verl PPO command (critic included), with the local paths and small
    sizes its table lists, runs to the end as PPO: the critic trains (its loss is on each step's
    console line; the command logs to the console only) and is saved beside the actor."""
    model, train, test = _demo_files(tmp_path)
    local = {
        "data.train_files": str(train),
        "data.val_files": str(test),
        "actor_rollout_ref.model.path": str(model),
        "critic.model.path": str(model),
        "data.train_batch_size": "8",
        "data.max_prompt_length": "64",
        "data.max_response_length": "8",
        "actor_rollout_ref.actor.ppo_mini_batch_size": "4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "16",
        "critic.ppo_micro_batch_size_per_gpu": "16",
        "actor_rollout_ref.rollout.name": "hf",
        "trainer.total_epochs": "1",
        "trainer.test_freq": "1",
    }
    log, out = _run_doc_command("verl-ppo", local, tmp_path)
    assert "note: algorithm.adv_estimator=gae" in log
    assert "step 2/2" in log and "validation at step 2" in log
    assert log.count("vf_loss") == 2, log[-2000:]
    step = out / "checkpoints" / "step_2"
    assert (step / "model.safetensors").is_file() and (step / "critic" / "model.safetensors").is_file()


def test_a_wrong_value_of_any_mapped_key_is_a_config_error() -> None:
    """Whatever a verl key's converter expects, a value it cannot take is reported with the key
    the user wrote and a fix, never a crash (every mapped key, with X and a list)."""
    for rule in (r for r in table.RULES if r.kind == "map"):
        key = rule.verl[:-2] + ".x" if rule.verl.endswith(".*") else rule.verl
        for value in ("X", "[1,2]"):
            try:
                load_config([f"{key}={value}"])
            except ConfigError as err:
                assert key in err.message and err.fix, (key, value, err.message)


# -- keys verl deprecates but still honours -----------------------------------------------------------

#: every deprecated key verl 0.9.1 still reads, and verl's current key for it (and
#: data.val_batch_size, which has none; it is also rlport's own setting, so no note)
DEPRECATED = {
    "actor_rollout_ref.actor.ppo_micro_batch_size": "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.ref.log_prob_micro_batch_size": "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size": (
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu"
    ),
    "critic.ppo_micro_batch_size": "critic.ppo_micro_batch_size_per_gpu",
    "critic.forward_micro_batch_size": "critic.forward_micro_batch_size_per_gpu",
}


@pytest.mark.parametrize("key", sorted(DEPRECATED))
def test_a_deprecated_verl_key_is_honoured_with_a_note_naming_the_current_key(key: str) -> None:
    """Each key verl calls deprecated yet still reads is taken (never refused), with one note
    naming the key verl uses now."""
    notes: list[str] = []
    load_config([f"{key}=8", "trainer.n_gpus_per_node=2"], notes=notes)
    (note,) = [n for n in notes if n.startswith(f"{key}=8 is deprecated")]
    assert DEPRECATED[key] in note, note
    assert verl.rule_for(key).deprecated_for  # type: ignore[union-attr]


def test_verl_val_batch_size_batches_validation() -> None:
    assert load_config(["data.val_batch_size=8"]).data.val_batch_size == 8
    assert load_config(["data.val_batch_size=null"]).data.val_batch_size == 0  # verl's default: one batch
    assert verl.rule_for("data.val_batch_size").deprecated_for  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("key", "setting"),
    [
        ("actor_rollout_ref.actor.ppo_micro_batch_size", "actor.micro_batch_size"),
        ("critic.ppo_micro_batch_size", "critic.micro_batch_size"),
    ],
)
@pytest.mark.parametrize(
    ("global_count", "gpus", "per_worker"), [(8, 1, 8), (8, 2, 4), (9, 2, 4), (16, 4, 4)]
)
def test_a_global_micro_batch_is_divided_over_the_workers_as_verl_divides_it(
    key: str, setting: str, global_count: int, gpus: int, per_worker: int
) -> None:
    """verl's deprecated micro-batch sizes count sequences over all data-parallel ranks; verl's
    workers floor-divide them by their number: rlport's setting is per worker."""
    notes: list[str] = []
    cfg = load_config(
        [f"{key}={global_count}", f"trainer.n_gpus_per_node={gpus}", "algorithm.adv_estimator=gae"],
        notes=notes,
    )
    section, leaf = setting.split(".")
    assert getattr(getattr(cfg, section), leaf) == per_worker
    assert any(f"{setting}={per_worker} per worker" in n for n in notes), notes


def test_a_deprecated_key_beside_its_current_key_is_refused_as_verl_refuses_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            [
                "actor_rollout_ref.actor.ppo_micro_batch_size=8",
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
            ]
        )
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu" in err.value.message
    assert "remove actor_rollout_ref.actor.ppo_micro_batch_size" in err.value.fix
    with pytest.raises(ConfigError) as err:
        load_config(
            ["critic.ppo_micro_batch_size=1", "trainer.n_gpus_per_node=2", "algorithm.adv_estimator=gae"]
        )
    assert "under one per worker" in err.value.message and "at least 2" in err.value.fix


def test_validation_in_batches_of_val_batch_size_gives_the_same_answers() -> None:
    """verl's data.val_batch_size batches the validation prompts; every prompt keeps its seed (its
    position), every worker gets at least one prompt per call, and a last batch too small for that
    joins the one before it."""
    from rlport.rollout.protocol import SamplingParams
    from rlport.train.data.prompts import Example
    from rlport.train.driver.evaluate import _answers

    class Pool:
        world = 2

        def __init__(self) -> None:
            self.calls: list[list[tuple[list[list[int]], SamplingParams]]] = []

        def call(self, method: str, args: list[tuple[list[list[int]], SamplingParams]]) -> list[object]:
            assert method == "generate" and all(prompts for prompts, _ in args)
            self.calls.append(args)
            # an answer (one token) names its prompt and the seed position it was drawn at
            return [
                (
                    [
                        [([p[0] * 1000 + params.prompt_offset + k], [0.0], "stop")]
                        for k, p in enumerate(prompts)
                    ],
                    {"time/generate": 0.0},
                )
                for prompts, params in args
            ]

    class Tokenizer:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return " ".join(map(str, ids))

    class Rewards:
        def result(self, source: str, text: str, truth: object, extra: object) -> object:
            return types.SimpleNamespace(score=float(text), extra={})

    examples = [Example(i, [], "s", "", {}, prompt_ids=[i]) for i in range(7)]
    params = SamplingParams(max_new_tokens=2, n=1, temperature=1.0, seed=3)
    answers = {}
    for size, batches in ((0, 1), (1, 3), (3, 2), (4, 2), (7, 1)):
        pool = Pool()
        scored = _answers(pool, examples, params, size, tokenizer=Tokenizer(), rewards=Rewards())
        assert len(pool.calls) == batches, (size, pool.calls)
        flat = [
            (a.example.index, a.token_ids[0])
            for prompts in scored
            for group in prompts
            for a in group
            if a.score == a.token_ids[0]  # decoded and scored, every answer
        ]
        assert [i for i, _ in flat] == list(range(7))
        answers[size] = flat
    # prompt i is always answered at offset i: the same seed whatever the batching
    assert all(a == answers[0] for a in answers.values())
    assert answers[0] == [(i, i * 1000 + i) for i in range(7)]
