"""The vLLM adapter's start-up settings, without vLLM: the cpu plugin's engine arguments, the ``env``
option (an exported variable wins, nothing leaks past start-up) and the filter that drops vLLM's
chat-template warm-up failure."""

from __future__ import annotations

import logging
import os

import pytest

from rlport.errors import EngineError
from rlport.plugins.cpu import VLLM_RESERVED_CPUS, CpuPlugin
from rlport.rollout.vllm_engine import WARMUP_LOGGER, environment, skip_chat_warmup_failure, start_env


def test_cpu_plugin_gives_vllm_every_core() -> None:
    plugin = CpuPlugin()
    assert plugin.rlport_engine_args("vllm", {}) == {"enforce_eager": True, "env": {VLLM_RESERVED_CPUS: "0"}}
    user = plugin.rlport_engine_args(
        "vllm", {"enforce_eager": False, "env": {VLLM_RESERVED_CPUS: "1", "X": "y"}}
    )
    assert user == {"env": {VLLM_RESERVED_CPUS: "1", "X": "y"}}
    assert plugin.rlport_engine_args("hf", {}) is None


def test_environment_sets_then_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLPORT_TEST_A", raising=False)
    monkeypatch.setenv("RLPORT_TEST_B", "before")
    with environment({"RLPORT_TEST_A": "1", "RLPORT_TEST_B": "during"}):
        assert (os.environ["RLPORT_TEST_A"], os.environ["RLPORT_TEST_B"]) == ("1", "during")
    assert "RLPORT_TEST_A" not in os.environ and os.environ["RLPORT_TEST_B"] == "before"


def test_exported_variable_wins_over_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VLLM_RESERVED_CPUS, "1")
    monkeypatch.delenv("RLPORT_TEST_Y", raising=False)
    assert start_env({VLLM_RESERVED_CPUS: "0", "RLPORT_TEST_Y": "2"}) == {
        VLLM_RESERVED_CPUS: "1",
        "RLPORT_TEST_Y": "2",
    }
    assert start_env(None) == {}
    with pytest.raises(EngineError, match=r"env=\['x'\] is not a mapping"):
        start_env(["x"])


def test_chat_warmup_failure_is_dropped_and_nothing_else() -> None:
    logger = logging.getLogger(WARMUP_LOGGER)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with skip_chat_warmup_failure():
            try:
                raise ValueError("skip_tokenizer_init")
            except ValueError:
                logger.warning("Chat template warmup failed", exc_info=True)
            logger.warning("something else")
        logger.warning("Chat template warmup failed")  # the filter is gone after start-up
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else", "Chat template warmup failed"]
