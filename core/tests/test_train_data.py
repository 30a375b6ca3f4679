"""Prompts from parquet files in verl's layout, tokenised with the model's chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlport.errors import ConfigError
from rlport.train.data.prompts import Sampler, read_parquet, tokenize
from rlport.train.loading import load_tokenizer


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab=None)


def _verl_rows() -> list[dict[str, Any]]:
    # the shape verl's examples/data_preprocess/gsm8k.py writes
    return [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"What is {i} + {i}?" + " Think." * i}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
            "extra_info": {"split": "train", "index": i, "answer": f"#### {2 * i}"},
        }
        for i in range(5)
    ]


def test_reads_verl_layout_and_applies_chat_template(tmp_path: Path, tiny_model: Path) -> None:
    f = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(_verl_rows()), f)
    examples = read_parquet([str(f)])
    assert [e.ground_truth for e in examples] == ["0", "2", "4", "6", "8"]
    assert examples[3].data_source == "openai/gsm8k"
    assert examples[3].messages == [{"role": "user", "content": "What is 3 + 3? Think. Think. Think."}]
    assert examples[3].extra_info["index"] == 3
    tok = load_tokenizer(tiny_model)
    kept, dropped = tokenize(examples, tok, max_prompt_length=256)
    assert dropped == 0
    text = tok.decode(kept[3].prompt_ids)
    assert text == "<|user|>What is 3 + 3? Think. Think. Think.<eos><|assistant|>"
    # a limit below the prompt lengths drops them, and all dropped is an error naming the fix
    short, dropped = tokenize(read_parquet([str(f)]), tok, max_prompt_length=len(kept[2].prompt_ids))
    assert ([e.index for e in short], dropped) == ([0, 1, 2], 2)
    with pytest.raises(ConfigError) as err:
        tokenize(read_parquet([str(f)]), tok, max_prompt_length=3)
    longest = max(len(e.prompt_ids) for e in kept)
    assert f"the longest has {longest}" in err.value.message
    assert f"data.max_prompt_length={longest} (keeps every prompt)" in err.value.fix  # the measured need


def test_max_samples_draws_or_takes_the_first(tmp_path: Path) -> None:
    """data.train_max_samples: the first N without shuffling; with it, a draw seeded by
    trainer.seed (the same for the same seed), kept in file order; 0 or more than there are: all."""
    from rlport.train.data.prompts import limit

    f = tmp_path / "train.parquet"
    rows = [{**_verl_rows()[0], "extra_info": {"index": i}} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), f)
    examples = read_parquet([str(f)])
    assert [e.index for e in limit(examples, 3, shuffle=False, seed=0)] == [0, 1, 2]
    drawn = [e.index for e in limit(examples, 5, shuffle=True, seed=7)]
    assert len(drawn) == 5 and drawn == sorted(drawn) and drawn != [0, 1, 2, 3, 4]
    assert [e.index for e in limit(examples, 5, shuffle=True, seed=7)] == drawn
    assert [e.index for e in limit(examples, 5, shuffle=True, seed=8)] != drawn
    assert limit(examples, 0, shuffle=True, seed=0) == examples == limit(examples, 99, shuffle=True, seed=0)


def test_chat_template_arguments_reach_the_template(tmp_path: Path, tiny_model: Path) -> None:
    """data.apply_chat_template_kwargs (verl's, e.g. Qwen3's enable_thinking) is passed to the
    tokenizer's apply_chat_template."""
    f = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(_verl_rows()[:1]), f)
    tok = load_tokenizer(tiny_model)
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}<eos>{% endif %}<|assistant|>"
    )
    (plain,), _ = tokenize(read_parquet([str(f)]), tok, 256)
    (quiet,), _ = tokenize(read_parquet([str(f)]), tok, 256, {"enable_thinking": False})
    assert tok.decode(plain.prompt_ids) == "What is 0 + 0?<|assistant|>"
    assert tok.decode(quiet.prompt_ids) == "What is 0 + 0?<eos><|assistant|>"


def test_several_files_and_a_string_prompt(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.Table.from_pylist(_verl_rows()[:2]), a)
    rows = [{"data_source": "s", "question": "plain text", "reward_model": {"ground_truth": 1}}]
    pq.write_table(pa.Table.from_pylist(rows), b)
    with pytest.raises(ConfigError) as err:
        read_parquet([str(a), str(b)])
    assert "lacks column(s) ['prompt']" in err.value.message and "data.prompt_key" in err.value.fix
    examples = read_parquet([str(b)], prompt_key="question")
    assert examples[0].messages == [{"role": "user", "content": "plain text"}]
    assert examples[0].extra_info is None


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_parquet([str(tmp_path / "nope.parquet")])
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ConfigError, match="not a readable parquet file"):
        read_parquet([str(junk)])
    no_gt = tmp_path / "nogt.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "data_source": "s",
                    "prompt": [{"role": "user", "content": "x"}],
                    "reward_model": {"style": "rule"},
                }
            ]
        ),
        no_gt,
    )
    with pytest.raises(ConfigError, match="'ground_truth'"):
        read_parquet([str(no_gt)])


def test_sampler_walks_epochs_and_resumes() -> None:
    s = Sampler(5, 3, shuffle=True, seed=1)
    seen = s.next_batch() + s.next_batch()  # crosses into epoch 1
    assert s.epoch == 1 and s.cursor == 1
    assert sorted(seen[:5]) == [0, 1, 2, 3, 4]
    state = s.state()
    follow = [s.next_batch() for _ in range(3)]
    r = Sampler(5, 3, shuffle=True, seed=1)
    r.restore(state)
    assert [r.next_batch() for _ in range(3)] == follow
    assert Sampler(4, 2, shuffle=False, seed=0).next_batch() == [0, 1]
