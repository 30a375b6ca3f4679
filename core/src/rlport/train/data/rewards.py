"""Rule-based rewards, chosen by a sample's ``data_source``.

A reward function takes ``(data_source, solution_str, ground_truth, extra_info)`` and returns a
float, or as verl allows a dict with the ``score`` and other values (``pred``: the extracted
answer, for validation's majority vote; ``acc``; ...), the signature of verl's
``custom_reward_function``. Register one for a data source with the decorator::

    from rlport.train.data import rewards

    @rewards.register("my_task")
    def score(data_source, solution_str, ground_truth, extra_info):
        return float(solution_str.strip() == ground_truth)

or point the config at a function that handles every source: ``reward.custom=my_module:score``
(``my_module`` importable, or a path ``path/to/file.py:score``), or as verl does,
``custom_reward_function.path=my_reward.py custom_reward_function.name=compute_score``
(``reward.path`` / ``reward.name``).

Built in: verl's strict GSM8K rule (``openai/gsm8k``) and math through math-verify (verl's math
sources, ``rlport[math]``). Both give the answer they extracted (an ``answer`` function beside
the rule) as ``pred``, so validation can vote over a prompt's answers.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError

RewardFn = Callable[[str, str, Any, Any], float | Mapping[str, Any]]

_REGISTRY: dict[str, RewardFn] = {}


def register(*data_sources: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: use the function for samples whose ``data_source`` is one of ``data_sources``."""
    if not data_sources:
        raise TypeError("register() needs at least one data source name, e.g. @register('gsm8k')")

    def deco(fn: RewardFn) -> RewardFn:
        for name in data_sources:
            _REGISTRY[name] = fn
        return fn

    return deco


def unregister(data_source: str) -> None:
    _REGISTRY.pop(data_source, None)


def registered() -> dict[str, RewardFn]:
    return dict(_REGISTRY)


def load_custom(spec: str) -> RewardFn:
    """Import ``module:function`` or ``path/to/file.py:function``; errors name the fix."""
    if ":" not in spec:
        raise ConfigError(
            f"reward.custom={spec!r} is not of the form module:function", "reward.custom=my_rewards:score"
        )
    module_name, attr = spec.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ConfigError(f"reward.custom file '{path}' does not exist", "give an existing .py file")
            mod_spec = importlib.util.spec_from_file_location(f"rlport_custom_reward_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"reward.custom module '{module_name}' cannot be imported: {exc}",
            f"put {module_name}.py on PYTHONPATH (e.g. PYTHONPATH=. rlport train ...) or give a file path",
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(
            f"reward.custom: '{module_name}' has no function '{attr}'",
            f"define def {attr}(data_source, solution_str, ground_truth, extra_info) -> float in {module_name}"
            " (or a dict with 'score')",
        )
    return fn


class RewardManager:
    """Scores decoded responses: the custom function if configured, else the registry by source."""

    def __init__(self, custom: str = "") -> None:
        self.custom: RewardFn | None = load_custom(custom) if custom else None

    @classmethod
    def from_config(cls, reward: Any) -> RewardManager:
        """From the ``reward`` section: ``custom`` (module:function) or verl's ``path`` + ``name``."""
        if reward.path:
            return cls(f"{reward.path}:{reward.name or 'compute_score'}")
        return cls(reward.custom)

    def check_sources(self, sources: set[str]) -> None:
        """Fail before training when a data source has no reward."""
        if self.custom is not None:
            return
        missing = sorted(s for s in sources if s not in _REGISTRY)
        from rlport.extras import require

        for source in sorted(sources - set(missing)):
            needs = getattr(_REGISTRY[source], "requires", None)
            if needs:
                require(needs[0], needs[1], purpose=f"the reward of data_source {source!r}")
        if missing:
            raise ConfigError(
                f"no reward function for data_source {missing} (registered: {sorted(_REGISTRY)})",
                "register one with @rlport.train.data.rewards.register('<source>') or set reward.custom=module:function",
            )

    def _fn(self, data_source: str) -> RewardFn:
        fn = self.custom if self.custom is not None else _REGISTRY.get(data_source)
        if fn is None:
            self.check_sources({data_source})
        assert fn is not None
        return fn

    def score(self, data_source: str, solution_str: str, ground_truth: Any, extra_info: Any) -> float:
        """The response's score (a returned dict's ``score``): what training uses."""
        fn = self._fn(data_source)
        return reward_score(fn, fn(data_source, solution_str, ground_truth, extra_info))

    def result(self, data_source: str, solution_str: str, ground_truth: Any, extra_info: Any) -> RewardResult:
        """The response's score and the reward's extra information (:func:`reward_result`): what
        validation reports."""
        fn = self._fn(data_source)
        return reward_result(fn, fn(data_source, solution_str, ground_truth, extra_info), solution_str)


@dataclass(frozen=True)
class RewardResult:
    """A scored response: ``score`` trains; ``extra`` is verl's ``reward_extra_info`` of the
    answer, the variables validation reports beside ``reward``."""

    score: float
    extra: dict[str, Any] = field(default_factory=dict)


def reward_result(fn: RewardFn, value: Any, solution_str: str) -> RewardResult:
    """What the reward function ``fn`` returned for ``solution_str``, read as verl's reward loop
    reads it: a dict gives its ``score`` and keeps every key as extra information; a number is
    the score, with ``acc`` equal to it, and ``pred`` from the function's ``answer`` extractor
    when it has one (the built-in rules)."""
    score = reward_score(fn, value)
    if isinstance(value, Mapping):
        return RewardResult(score, dict(value))
    extra: dict[str, Any] = {"acc": score}
    answer = getattr(fn, "answer", None)
    if answer is not None:
        extra["pred"] = answer(solution_str)
    return RewardResult(score, extra)


def reward_score(fn: RewardFn, value: Any) -> float:
    """The score in what ``fn`` returned: the number, or a dict's ``score``; anything else is
    refused, naming the function and the value."""
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"
    if isinstance(value, Mapping):
        if "score" not in value:
            raise ConfigError(
                f"reward function {name} returned a dict without 'score' (keys {sorted(map(str, value))})",
                "return a number, or a dict such as {'score': 1.0, 'pred': '72'}",
            )
        value = value["score"]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"reward function {name} returned {value!r} as the score; expected a number",
            "return a float, or a dict with a numeric 'score'",
        ) from None


# -------------------------------------------------------------------------------------------------
# Built-in rules
# -------------------------------------------------------------------------------------------------

#: verl's strict GSM8K rule: the number after "#### " (one space), in the response's last 300
#: characters; commas and dollar signs dropped; compared as text with the ground truth.
_GSM8K_ANSWER = re.compile(r"#### (-?[0-9.,]+)")
GSM8K_TAIL = 300


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after the last ``#### `` in the last 300 characters (commas and ``$`` removed),
    or None: verl's ``strict`` extraction."""
    found = _GSM8K_ANSWER.findall(text[-GSM8K_TAIL:])
    if not found:
        return None
    return found[-1].replace(",", "").replace("$", "")


_warned_gsm8k_truth = False


@register("openai/gsm8k", "gsm8k")
def gsm8k_reward(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any) -> float:
    """1.0 when the strict answer equals the ground truth as text, else 0.0, as verl scores it
    (``verl.utils.reward_score.gsm8k.compute_score``, format score 0). The ground truth is the
    number alone, as verl's preprocessing writes it; one holding the whole GSM8K answer
    (``... #### 72``) never matches, and is warned about once."""
    global _warned_gsm8k_truth
    truth = str(ground_truth)
    if "####" in truth and not _warned_gsm8k_truth:
        _warned_gsm8k_truth = True
        warnings.warn(
            f"gsm8k ground truth {truth[-60:]!r} holds the whole answer with its '####' line, so no "
            "response can match it; write the number after '####' only, as verl's "
            "examples/data_preprocess/gsm8k.py does (extract_solution)",
            stacklevel=2,
        )
    answer = extract_gsm8k_answer(solution_str)
    return float(answer is not None and answer == truth)


def gsm8k_pred(solution_str: str) -> str:
    """The strict answer of the response, ``""`` when it has none (a vote for no answer)."""
    return extract_gsm8k_answer(solution_str) or ""


gsm8k_reward.answer = gsm8k_pred  # type: ignore[attr-defined]


#: verl's math data sources (its default_compute_score), scored here through math-verify
MATH_SOURCES = ("lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math")


@register(*MATH_SOURCES)
def math_reward(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any) -> float:
    """1.0 when math-verify finds the response's answer (a LaTeX or plain expression) equal to
    the ground truth (read as ``\\boxed{ground_truth}``), else 0.0. Needs ``rlport[math]``."""
    pred = _math_parse(solution_str, data_source)
    from math_verify import LatexExtractionConfig, parse, verify

    gold = parse("\\boxed{" + str(ground_truth) + "}", (LatexExtractionConfig(),))
    if not gold or not pred:
        return 0.0
    return float(verify(gold, pred))


def _math_parse(solution_str: str, data_source: str = "math") -> list[Any]:
    """math-verify's reading of the response's answer (an expression, LaTeX or plain)."""
    from rlport.extras import import_optional

    import_optional("math_verify", "math", purpose=f"the math reward (data_source {data_source!r})")
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(solution_str, (ExprExtractionConfig(), LatexExtractionConfig()))


def math_pred(solution_str: str) -> str:
    """The response's answer as math-verify reads it, printed by sympy (so ``\\frac{2}{4}`` and
    ``1/2`` are one vote), ``""`` when it has none."""
    found = _math_parse(solution_str)
    return str(found[0]) if found else ""


math_reward.requires = ("math", ("math_verify",))  # type: ignore[attr-defined]
math_reward.answer = math_pred  # type: ignore[attr-defined]


DEMO_SOURCE = "rlport/repeat_letter"


@register(DEMO_SOURCE)
def repeat_letter_reward(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any) -> float:
    """The demo task: the share of the first ``length`` letters of the response that equal the
    target letter (spaces ignored). ``extra_info["length"]`` is the response length asked for."""
    length = int((extra_info or {}).get("length", 8))
    letters = [c for c in solution_str if not c.isspace()][:length]
    return sum(c == str(ground_truth) for c in letters) / max(1, length)
