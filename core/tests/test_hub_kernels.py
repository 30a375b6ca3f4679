"""Hugging Face Hub kernels are the device plugin's decision (rlport.devices.hub_kernels).

transformers 5 turns them on whenever the ``kernels`` package is installed: layers are swapped for
code fetched from the Hub at ``from_pretrained`` and ``model.train()``, and device types kernels
does not know are refused (a PrivateUse1 device crashed at the first ``model.train()``). After
``rlport.init()`` they are off unless the device plugin asks and kernels supports the device, or
the user set ``USE_HUB_KERNELS`` themselves; the startup summary says which, and why."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from rlport import bootstrap
from rlport.devices.hub_kernels import VARIABLE, decide
from rlport.summary import collect, render
from rlport.types import DeviceInfo

CUDA = DeviceInfo(device_type="cuda", count=1)


def test_off_unless_the_device_plugin_asks() -> None:
    off = decide(CUDA, "cuda", {})
    assert not off.on and off.reason == "device plugin 'cuda' does not ask for them"
    asked = decide(DeviceInfo(device_type="cuda", count=1, hub_kernels=True), "cuda", {})
    assert asked.on and asked.reason == "device plugin 'cuda' asks for them"
    pytest.importorskip("kernels")
    assert any("kernels-community/" in source for _, source in asked.layers), asked.layers


def test_off_for_a_device_the_kernels_package_does_not_support() -> None:
    other = decide(DeviceInfo(device_type="simdev", count=2, hub_kernels=True), "simdev", {})
    assert not other.on and "does not support device type 'simdev'" in other.reason


def test_the_users_own_variable_wins() -> None:
    assert decide(CUDA, "cuda", {VARIABLE: "yes"}).on
    user_off = decide(DeviceInfo(device_type="cuda", count=1, hub_kernels=True), "cuda", {VARIABLE: "0"})
    assert not user_off.on and user_off.reason == f"{VARIABLE}=0 set by the user"


def test_init_exports_the_decision_and_the_summary_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    bootstrap.reset()
    rt = bootstrap.init()
    assert os.environ[VARIABLE] == "0"
    data = collect(rt)
    assert data["resolved"]["hub_kernels"] == {
        "on": False,
        "reason": f"device plugin {rt.device_plugin!r} does not ask for them",
        "layers": [],
    }
    out = io.StringIO()
    Console(file=out, width=200).print(render(data))
    assert f"hub kernels: off (device plugin '{rt.device_plugin}' does not ask for them)" in out.getvalue()
    bootstrap.reset()
    assert VARIABLE not in os.environ  # put back as the user had it


def test_the_summary_lists_every_layer_and_its_source_when_on(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kernels")
    data = collect(bootstrap.init())
    decision = decide(DeviceInfo(device_type="cuda", count=1, hub_kernels=True), "cuda", {})
    data["resolved"]["hub_kernels"] = decision.to_json()
    out = io.StringIO()
    Console(file=out, width=300).print(render(data))
    text = out.getvalue()
    assert "hub kernels: on (device plugin 'cuda' asks for them)" in text
    for layer, source in decision.layers:
        assert layer in text and source.split(" ")[0] in text


def test_a_model_loaded_after_init_is_not_kernelized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect itself: without rlport's decision transformers loads with use_kernels on (when
    ``kernels`` is installed); after ``rlport.init()`` on a device plugin that did not ask, off."""
    pytest.importorskip("kernels")
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    monkeypatch.delenv(VARIABLE, raising=False)
    bootstrap.reset()
    assert AutoModelForCausalLM.from_pretrained(tmp_path).use_kernels  # transformers' own default
    bootstrap.init()
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    model.train()
    assert not model.use_kernels
