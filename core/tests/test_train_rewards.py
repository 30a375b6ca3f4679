"""Rule-based rewards: the registry, the built-in rules and a user's custom function."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlport.errors import ConfigError
from rlport.train import rewards
from rlport.train.rewards import RewardManager, extract_gsm8k_answer


def test_gsm8k_rule() -> None:
    assert extract_gsm8k_answer("so 3+4=7\n#### 7") == "7"
    assert extract_gsm8k_answer("#### 1,234.") == "1234"
    assert extract_gsm8k_answer("no marker 7") is None
    m = RewardManager()
    assert m.score("openai/gsm8k", "work... #### 72", "72", None) == 1.0
    assert m.score("openai/gsm8k", "#### 70\n then #### 72", "72", None) == 1.0  # the last one counts
    assert m.score("openai/gsm8k", "#### 71", "72", None) == 0.0
    assert m.score("openai/gsm8k", "72", "72", None) == 0.0  # no #### marker: strict rule
    assert m.score("gsm8k", "#### 1,000", "1000", None) == 1.0


def test_demo_rule_counts_the_target_letter() -> None:
    m = RewardManager()
    src = rewards.DEMO_SOURCE
    assert m.score(src, "cccc", "c", {"length": 4}) == 1.0
    assert m.score(src, "c c a b", "c", {"length": 4}) == 0.5  # spaces ignored
    assert m.score(src, "cc", "c", {"length": 4}) == 0.5  # stopping early scores the missing letters 0
    assert m.score(src, "ccccxxxx", "c", {"length": 4}) == 1.0  # only the first `length` letters


def test_register_decorator_and_missing_source() -> None:
    @rewards.register("test/exact")
    def exact(data_source, solution_str, ground_truth, extra_info):  # type: ignore[no-untyped-def]
        return float(solution_str.strip() == ground_truth)

    try:
        m = RewardManager()
        m.check_sources({"test/exact", "gsm8k"})
        assert m.score("test/exact", " yes ", "yes", None) == 1.0
        assert m.score("test/exact", "no", "yes", None) == 0.0
        with pytest.raises(ConfigError) as err:
            m.check_sources({"test/exact", "unknown/source"})
        assert "unknown/source" in err.value.message
        assert "reward.custom=module:function" in err.value.fix
    finally:
        rewards.unregister("test/exact")
    assert "test/exact" not in rewards.registered()


def test_custom_reward_from_module_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rewards_mod.py").write_text(
        "def score(data_source, solution_str, ground_truth, extra_info):\n"
        "    return len(solution_str) + (10 if data_source == 'x' else 0) + extra_info['bonus']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = RewardManager("my_rewards_mod:score")
    m.check_sources({"anything"})  # a custom function handles every source
    assert m.score("x", "abc", None, {"bonus": 1}) == 14.0
    f = RewardManager(f"{tmp_path / 'my_rewards_mod.py'}:score")
    assert f.score("y", "ab", None, {"bonus": 0}) == 2.0
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        RewardManager("my_rewards_mod:nope")
    with pytest.raises(ConfigError, match="cannot be imported") as err:
        RewardManager("no_such_module_xyz:score")
    assert "PYTHONPATH" in err.value.fix
    sys.modules.pop("my_rewards_mod", None)
