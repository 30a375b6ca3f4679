"""``rlport.init()`` alone makes ``attn_implementation="rlport"`` work, in either import order, and
loads transformers only in programs that use it. Each order runs in its own interpreter, so which
module was imported first is real."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from rlport import bootstrap
from rlport.attention import autoregister

SNIPPET = textwrap.dedent(
    """
    import sys

    import torch

    import rlport

    if sys.argv[1] == "transformers-first":
        from transformers import Qwen2Config, Qwen2ForCausalLM
        rlport.init()
    else:
        rlport.init()
        assert "transformers" not in sys.modules
        from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlport.attention import transformers_integration as ti

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
        intermediate_size=128, vocab_size=100,
    )
    m = Qwen2ForCausalLM(config).eval()
    m.set_attn_implementation("rlport")

    lengths = [12, 7, 4]
    ids = torch.randint(1, 100, (len(lengths), 12), generator=torch.Generator().manual_seed(1))
    for side in ("left", "right"):
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            if side == "left":
                mask[row, 12 - n:] = 1
            else:
                mask[row, :n] = 1
        logits = {}
        for impl in ("rlport", "sdpa"):
            m.set_attn_implementation(impl)
            with torch.no_grad():
                logits[impl] = m(input_ids=ids, attention_mask=mask).logits
        valid = mask.bool()
        torch.testing.assert_close(logits["rlport"][valid], logits["sdpa"][valid], atol=1e-5, rtol=1e-5)
    assert ti.resolved(), "the rlport forward resolved a backend, so it really ran"
    # a model created with the name, as from_pretrained(..., attn_implementation="rlport") does
    from transformers import AutoModelForCausalLM
    other = AutoModelForCausalLM.from_config(config, attn_implementation="rlport")
    assert other.config._attn_implementation == "rlport"
    print("ok", sys.argv[1])
    """
)


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("order", ["transformers-first", "init-first"])
def test_init_alone_serves_attn_implementation_rlport(order: str) -> None:
    result = run_python(SNIPPET, order)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {order}"


def test_init_without_transformers_does_not_import_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        import rlport
        rt = rlport.init()
        rt.torch_device()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "transformers")
        assert not loaded, loaded
        print("clean")
        """
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_reset_unregisters_and_removes_the_hook() -> None:
    from transformers import AttentionInterface

    from rlport.attention import transformers_integration as ti

    ti.unregister()  # earlier tests in this process may have registered explicitly
    bootstrap.init()
    assert ti.registered_by_init() and AttentionInterface()["rlport"] is ti.rlport_attention_forward
    bootstrap.reset()
    assert not ti.is_registered()
    assert "rlport" not in AttentionInterface()
    assert autoregister._finder is None


def test_init_keeps_an_explicit_registration() -> None:
    from rlport.attention import transformers_integration as ti

    class Fake:
        def attention_backend(self, spec):
            raise AssertionError("not called here")

    fake = Fake()
    try:
        ti.register(runtime=fake)
        bootstrap.init()
        assert ti._state["runtime"] is fake, "init() must not replace a runtime registered explicitly"
        bootstrap.reset()
        assert ti.is_registered(), "an explicit registration outlives reset() (its models keep working)"
    finally:
        ti.unregister()


def test_hook_waits_for_transformers_when_it_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process transformers is loaded; hide its modeling module from the check to see the
    hook installed and then removed by reset()."""
    monkeypatch.delitem(sys.modules, autoregister.WATCHED)
    autoregister.install()
    finder = autoregister._finder
    assert finder is not None and finder in sys.meta_path and autoregister.WATCHED in finder.watched
    monkeypatch.undo()  # the real module back before anything imports it again
    bootstrap.reset()
    assert finder not in sys.meta_path
