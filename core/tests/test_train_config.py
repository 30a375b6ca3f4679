"""`rlport train` configuration on OmegaConf: Hydra-grammar overrides, a YAML file, the documented
`--show-config` text, and errors that name the fix (every problem of a run in one error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlport.errors import ConfigError
from rlport.train.config.keys import all_fields, all_keys, doc
from rlport.train.config.load import load_config
from rlport.train.config.show import rlport_yaml


def test_defaults_are_documented_and_round_trip_through_yaml(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    text = rlport_yaml()
    for key in all_keys():
        section, *parents, leaf = key.split(".")
        assert f"\n{section}:" in "\n" + text
        assert f"{'  ' * (len(parents) + 1)}{leaf}:" in text.replace("'n':", "n:")  # nested keys indent
        assert doc(key), f"{key} has no doc"
    assert "# samples per prompt: the GRPO group size" in text
    # a comment is a line of its own: no value line carries one
    for line in text.splitlines():
        assert line.lstrip().startswith("#") or "#" not in line, line
    assert yaml.safe_load(text)["rollout"]["n"] == 8  # valid YAML
    f = tmp_path / "c.yaml"
    f.write_text(text)
    assert load_config(config_file=f) == load_config()


def test_long_value_keeps_its_comment_apart(tmp_path: Path) -> None:
    long = "/a/very/long/path/" * 8 + "model"
    text = rlport_yaml(load_config([f"model.path={long}"]))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("path:"))
    assert lines[at].strip() == f"path: {long}"
    assert lines[at - 1].strip().startswith("# a local Hugging Face causal-LM folder")


def test_ranges_are_declared_beside_fields() -> None:
    meta = all_fields()["rollout.temperature"].metadata
    assert meta["range"].gt == 0 and "sampling" in meta["range"].why
    with pytest.raises(ConfigError) as err:
        load_config(["rollout.top_p=0", "model.dtype=int8"])
    assert "'rollout.top_p' is 0.0; expected in (0, 1]" in err.value.message
    assert "'model.dtype' is 'int8'; expected one of float32, bfloat16, float16" in err.value.message
    assert "fix: rlport train rollout.top_p=1.0" in err.value.message  # the default, not a guess


def test_dotted_overrides_set_typed_values() -> None:
    cfg = load_config(
        [
            "data.train_files=[a.parquet, b.parquet]",
            "rollout.engine=vllm",
            "trainer.steps=7",
            "actor.lr=3e-4",
            "algorithm.use_kl_loss=true",
            "actor.offload=null",
            "actor.betas=[0.8,0.95]",
            "rollout.options.gpu_memory_utilization=0.5",
            "rollout.options.enforce_eager=true",
            "+reward.custom=my_mod:fn",
            "trainer.logger=['console','jsonl']",
            "~rollout.top_k",
        ]
    )
    assert cfg.trainer.logger == ["console", "jsonl"]
    assert cfg.rollout.top_k == 0
    assert cfg.data.train_files == ["a.parquet", "b.parquet"]
    assert cfg.rollout.engine == "vllm"
    assert cfg.trainer.steps == 7 and isinstance(cfg.trainer.steps, int)
    assert cfg.actor.lr == pytest.approx(3e-4)
    assert cfg.algorithm.use_kl_loss is True
    assert cfg.actor.offload is None
    assert cfg.actor.betas == [0.8, 0.95]
    assert cfg.rollout.options == {"gpu_memory_utilization": 0.5, "enforce_eager": True}
    assert cfg.reward.custom == "my_mod:fn"
    assert load_config(["data.train_files=single.parquet"]).data.train_files == ["single.parquet"]


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["trainer.step=5"])
    assert "unknown config key 'trainer.step'" in err.value.message
    assert "trainer.steps" in err.value.fix
    with pytest.raises(ConfigError) as err:
        load_config(["rolout.n=4"])
    assert "'rollout.n'" in err.value.fix
    with pytest.raises(ConfigError) as err:
        load_config(["nothing_like_it.zzz=1"])
    assert "--show-config" in err.value.fix


def test_every_unknown_key_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["trainer.step=5", "rolout.n=4", "trainer.steps=lots", "rollout.n=1"])
    text = err.value.message
    assert text.startswith("4 problems in the configuration")  # keys, types and ranges together
    assert "'rollout.n' is 1; expected at least 2" in text
    assert "did you mean 'trainer.steps'?" in text and "did you mean 'rollout.n'?" in text
    assert "expects an integer, got 'lots'" in text


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.steps=abc", "expects an integer, got 'abc'"),
        ("trainer.steps=2.5", "expects an integer, got '2.5'"),
        ("actor.lr=fast", "expects a number, got 'fast'"),
        ("algorithm.use_kl_loss=maybe", "expects a boolean (true/false), got 'maybe'"),
        ("actor.betas=[0.9,x]", "expects a list of a number"),
        # shown as written: Hydra's own rendering escapes : { } (got '$\\{1\\:-vllm\\}')
        ("trainer.steps=${1:-8}", "expects an integer, got '${1:-8}'"),
        ("trainer.steps=a:b", "expects an integer, got 'a:b'"),
    ],
)
def test_wrong_type_names_key_value_type_and_fix(override: str, expected: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert f"config key '{key}'" in err.value.message
    assert expected in err.value.message
    assert err.value.fix.startswith(f"rlport train {key}=")


def test_out_of_range_and_malformed_overrides() -> None:
    with pytest.raises(ConfigError, match=r"'rollout.n' is 1; expected at least 2"):
        load_config(["rollout.n=1"])
    with pytest.raises(ConfigError, match=r"a multiple of trainer\.workers"):
        load_config(["trainer.workers=3", "data.train_batch_size=8"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(["trainer.steps"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(["trainer=5"])


def test_yaml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  steps: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(config_file=bad)
    assert "'trainer.steps' expects an integer, got 'many'" in err.value.message
    assert str(bad) in err.value.message
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(config_file=broken)
    # the command line wins over the file
    good = tmp_path / "good.yaml"
    good.write_text("trainer:\n  steps: 3\nrollout:\n  n: 4\n")
    cfg = load_config(["trainer.steps=9"], config_file=good)
    assert (cfg.trainer.steps, cfg.rollout.n) == (9, 4)


def test_an_unexpanded_shell_variable_is_a_config_error() -> None:
    """A value OmegaConf reads as an interpolation that does not resolve (a script's
    ${NNODES:-8} that the shell did not expand) is reported beside the other problems with the
    key and the fix, never a crash; one that names an rlport setting resolves."""
    with pytest.raises(ConfigError) as err:
        load_config(
            [
                "trainer.nnodes=${NNODES:-8}",
                "data.train_files=[${DATA}/train.parquet]",
                "rollout.options.swap_space=${SWAP}",
                "trainer.steps=many",
            ]
        )
    text = err.value.message
    assert "4 problems" in text
    assert "'trainer.nnodes' is '${NNODES:-8}', an interpolation rlport cannot resolve" in text
    assert "'data.train_files' is '[${DATA}/train.parquet]'" in text
    assert "'rollout.options.swap_space' is '${SWAP}'" in text
    assert "check that the variable is set" in text
    assert load_config(["trainer.seed=${trainer.steps}", "trainer.steps=3"]).trainer.seed == 3


def test_float16_weights_that_adamw_trains_are_refused_before_work() -> None:
    """The wide settings sweep: ``model.dtype=float16`` trained to nan in step 1 (AdamW's moments and
    eps underflow in float16). Refused before work, naming the model that trains every weight; LoRA's
    float32 adapters train."""
    import torch

    weight = torch.nn.Parameter(torch.ones(2, dtype=torch.float16))
    weight.grad = torch.tensor([1e-5, 0.0], dtype=torch.float16)
    torch.optim.AdamW([weight], lr=1e-3).step()
    assert not torch.isfinite(weight).all()  # why: the refusal is needed as long as this holds
    with pytest.raises(ConfigError) as e:
        load_config(["model.dtype=float16"])
    assert "model.dtype" in e.value.message and "model.lora_rank=0" in e.value.message
    assert "model.dtype=bfloat16" in e.value.fix
    assert load_config(["model.dtype=float16", "model.lora_rank=4"]).model.dtype == "float16"
    with pytest.raises(ConfigError, match="critic"):
        load_config(["model.dtype=float16", "model.lora_rank=4", "algorithm.adv_estimator=gae"])
    assert load_config(["model.dtype=bfloat16"]).model.dtype == "bfloat16"
