"""Rule-based rewards: the registry, the built-in rules and a user's custom function."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from verl_source import verl_module

from rlport.errors import ConfigError
from rlport.train.data import rewards
from rlport.train.data.rewards import RewardManager, extract_gsm8k_answer


def test_gsm8k_rule() -> None:
    assert extract_gsm8k_answer("so 3+4=7\n#### 7") == "7"
    assert extract_gsm8k_answer("#### 1,234") == "1234"
    assert extract_gsm8k_answer("#### 1,234.") == "1234."  # verl keeps the dot, so it cannot match
    assert extract_gsm8k_answer("####7") is None  # strict: one space after ####
    assert extract_gsm8k_answer("no marker 7") is None
    assert extract_gsm8k_answer("#### 5 " + "x" * 400) is None  # only the last 300 characters count
    m = RewardManager()
    assert m.score("openai/gsm8k", "work... #### 72", "72", None) == 1.0
    assert m.score("openai/gsm8k", "#### 70\n then #### 72", "72", None) == 1.0  # the last one counts
    assert m.score("openai/gsm8k", "#### 71", "72", None) == 0.0
    assert m.score("openai/gsm8k", "72", "72", None) == 0.0  # no #### marker: strict rule
    assert m.score("openai/gsm8k", "#### 72.0", "72", None) == 0.0  # compared as text, as verl does
    assert m.score("gsm8k", "#### 1,000", "1000", None) == 1.0


def test_gsm8k_ground_truth_with_its_answer_line_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewards, "_warned_gsm8k_truth", False)
    with pytest.warns(UserWarning, match="holds the whole answer"):
        score = rewards.gsm8k_reward("openai/gsm8k", "#### 72", "3 + 4 = 7 ...\n#### 72", None)
    assert score == 0.0  # as verl scores it: text against the whole answer never matches


def test_math_reward_through_math_verify() -> None:
    pytest.importorskip("math_verify")
    m = RewardManager()
    assert m.score("lighteval/MATH", "so the answer is $\\boxed{\\frac{1}{2}}$", "0.5", None) == 1.0
    assert m.score("HuggingFaceH4/MATH-500", "the answer is $\\frac{2}{4}$", "\\frac{1}{2}", None) == 1.0
    assert m.score("lighteval/MATH", "the answer is $\\frac{1}{3}$", "\\frac{1}{2}", None) == 0.0
    assert m.score("lighteval/MATH", "no idea", "2", None) == 0.0


def test_math_reward_without_math_verify_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlport.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(MissingExtra) as err:
        RewardManager().check_sources({"lighteval/MATH"})  # before training, not at the first score
    assert err.value.fix == 'pip install "rlport[math]"'


def _verl_gsm8k() -> object:
    """verl's own gsm8k module: imported, or loaded from the installed distribution's file."""
    try:
        from verl.utils.reward_score import gsm8k

        return gsm8k
    except Exception:
        return verl_module("verl/utils/reward_score/gsm8k.py", "verl_gsm8k_reference")


def _gsm8k_cases() -> list[tuple[str, str]]:
    truths = ["72", "1000", "-5", "0", "3.5", "18"]
    bodies = [
        "#### {t}",
        "The answer is #### {t}",
        "####{t}",
        "#### {t}.",
        "#### {t}\n",
        "#### ${t}",
        "#### {t},000",
        "#### 1,{t}",
        "steps... #### 9\nso #### {t}",
        "#### {t} and then #### 4",
        "{t}",
        "the answer: {t}",
        "#### " + "x" * 300 + " {t}",
        "x" * 400 + " #### {t}",
        "#### {t}" + " " * 299,
        "####  {t}",
        "#### -{t}",
        "#### +{t}",
        "answer #### {t}!!",
    ]
    cases = [(b.format(t=t), t) for t in truths for b in bodies]
    cases += [("#### 1,234", "1234"), ("#### 1,234", "1,234"), ("#### 72", "72.0"), ("#### 72", " 72")]
    return cases


def test_gsm8k_agrees_with_verl() -> None:
    verl = _verl_gsm8k()
    cases = _gsm8k_cases()
    assert len(cases) >= 50
    disagree = [
        (text, truth, ours, theirs)
        for text, truth in cases
        if (ours := rewards.gsm8k_reward("openai/gsm8k", text, truth, None))
        != (theirs := float(verl.compute_score(text, truth)))  # type: ignore[attr-defined]
    ]
    assert not disagree, disagree[:5]
    assert {rewards.gsm8k_reward("openai/gsm8k", t, g, None) for t, g in cases} == {0.0, 1.0}


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


def test_verl_custom_reward_function_path_and_name(tmp_path: Path) -> None:
    from rlport.train.config.load import load_config

    f = tmp_path / "my_reward.py"
    f.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info):\n"
        "    return float(solution_str == ground_truth) + extra_info['bonus']\n"
        "def other(data_source, solution_str, ground_truth, extra_info):\n"
        "    return -1.0\n"
    )
    cfg = load_config([f"custom_reward_function.path={f}"])  # verl's default name: compute_score
    m = RewardManager.from_config(cfg.reward)
    m.check_sources({"any/source"})
    assert m.score("any/source", "yes", "yes", {"bonus": 0.5}) == 1.5
    cfg = load_config([f"reward.custom_reward_function.path={f}", "reward.custom_reward_function.name=other"])
    assert RewardManager.from_config(cfg.reward).score("s", "", "", None) == -1.0


def test_builtin_rules_give_their_answer_as_pred() -> None:
    """Validation's extra information of a built-in rule: ``acc`` (the score, as verl's reward
    loop records a plain score) and ``pred``, the answer extracted; the score is unchanged."""
    m = RewardManager()
    right = m.result("openai/gsm8k", "3 + 4 = 7\n#### 1,072", "1072", None)
    assert (right.score, right.extra) == (1.0, {"acc": 1.0, "pred": "1072"})
    wrong = m.result("openai/gsm8k", "#### 70", "72", None)
    assert (wrong.score, wrong.extra) == (0.0, {"acc": 0.0, "pred": "70"})
    assert m.result("openai/gsm8k", "72", "72", None).extra["pred"] == ""  # no strict answer
    assert m.score("openai/gsm8k", "#### 70", "72", None) == wrong.score
    demo = m.result(rewards.DEMO_SOURCE, "aab", "a", {"length": 4})
    assert (demo.score, demo.extra) == (0.5, {"acc": 0.5})  # no extractor: no pred


def test_math_pred_is_one_vote_per_value() -> None:
    pytest.importorskip("math_verify")
    m = RewardManager()
    half = m.result("lighteval/MATH", "so the answer is $\\boxed{\\frac{2}{4}}$", "\\frac{1}{2}", None)
    assert half.score == 1.0 and half.extra["pred"] == rewards.math_pred("the answer is $1/2$") == "1/2"
    third = m.result("lighteval/MATH", "the answer is $\\frac{1}{3}$", "\\frac{1}{2}", None)
    assert third.score == 0.0 and third.extra["pred"] == "1/3"
    assert m.result("math", "no idea", "2", None).extra["pred"] == ""


def test_custom_reward_returning_a_dict(tmp_path: Path) -> None:
    """A custom function may return verl's dict: its ``score`` trains, every key is kept for
    validation; a dict without ``score`` or a score that is no number is refused by name."""
    f = tmp_path / "dict_reward.py"
    f.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info):\n"
        "    return {'score': float(solution_str == ground_truth), 'pred': solution_str, 'len': len(solution_str)}\n"
        "def no_score(data_source, solution_str, ground_truth, extra_info):\n"
        "    return {'acc': 1.0}\n"
        "def text(data_source, solution_str, ground_truth, extra_info):\n"
        "    return 'good'\n"
    )
    m = RewardManager(f"{f}:compute_score")
    assert m.score("s", "yes", "yes", None) == 1.0
    assert m.result("s", "no", "yes", None).extra == {"score": 0.0, "pred": "no", "len": 2}
    with pytest.raises(ConfigError, match="without 'score'") as err:
        RewardManager(f"{f}:no_score").score("s", "", "", None)
    assert "'score'" in err.value.fix
    with pytest.raises(ConfigError, match="returned 'good' as the score"):
        RewardManager(f"{f}:text").result("s", "", "", None)
