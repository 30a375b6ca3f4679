"""verl_npu's transformers patches, applied by the core's patch manager to real transformers models
(tiny Qwen2 and Qwen3-MoE built locally on CPU), with the fake torch_npu whose fused ops compute the
documented math. Logits with the patches equal logits without them within the tolerance rule
(conformance.md): against float64 logits, the patched bfloat16 model's error is at most 2x the plain
bfloat16 model's plus the rounding floor.

The wrappers call the fused ops only for tensors on the NPU; here ``kernels.DEVICE`` is pointed at
``cpu`` so they run on the host, and the fake's call records prove every op was used."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import ModuleType

import pytest
import torch
from ascend_fakes import fake_npu_fixture  # noqa: F401  (the fixture "fake_npu")

from rlport.patches import PatchManager
from rlport_ascend import kernels
from rlport_ascend.patches import TRANSFORMERS, transformers_patches
from rlport_conformance.status import Status
from rlport_conformance.tolerance import Judgement, judge

transformers = pytest.importorskip("transformers")


# A tiny decoder: 2 layers, GQA (4 query heads, 2 kv heads), small vocabulary.
TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**TINY, rms_norm_eps=1e-6))


def _qwen3_moe():
    """Layer 0 routes over 4 experts (top 2); layer 1 is a dense Qwen3MoeMLP, which the MLP patch targets."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        **TINY,
        moe_intermediate_size=32,
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
    )
    config._experts_implementation = "eager"  # grouped_mm has no float64 kernel (the float64 reference)
    return Qwen3MoeForCausalLM(config)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture
def on_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "DEVICE", "cpu")


@dataclass
class Comparison:
    verdict: Judgement
    statuses: dict[str, str]  # target -> status right after applying
    ops: set[str]
    reverted: bool  # after revert_all the model computes exactly its original logits again


def _compare(build, specs, fake_npu: ModuleType) -> Comparison:
    """Logits of ``build()``'s model in float64 (reference), bfloat16 (plain torch) and bfloat16 with
    ``specs`` applied by the core's patch manager, judged by the tolerance rule."""
    import transformers.models.qwen2.modeling_qwen2
    import transformers.models.qwen3_moe.modeling_qwen3_moe  # noqa: F401  (loaded: patched now, not pending)

    torch.manual_seed(0)
    model = build().eval()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    reference = _logits(copy.deepcopy(model).to(torch.float64), ids)
    plain_model = copy.deepcopy(model).to(torch.bfloat16)
    plain = _logits(plain_model, ids)
    manager = PatchManager()
    statuses = {r.target: r.status for r in manager.apply_specs("ascend", specs, strict=True)}
    try:
        fake_npu.CALLS.clear()
        patched = _logits(plain_model, ids)
    finally:
        manager.revert_all()
    error = float((patched.double() - reference).abs().max())
    torch_error = float((plain.double() - reference).abs().max())
    rounding = float((reference.to(torch.bfloat16).double() - reference).abs().max())
    return Comparison(
        judge(error, torch_error, rounding),
        statuses,
        {c["op"] for c in fake_npu.CALLS},
        torch.equal(_logits(plain_model, ids), plain),
    )


@pytest.mark.parametrize("build", [_qwen2, _qwen3_moe], ids=["qwen2", "qwen3_moe"])
def test_patched_logits_equal_the_originals(build, fake_npu: ModuleType, on_host: None) -> None:
    result = _compare(build, transformers_patches(), fake_npu)
    assert set(result.statuses.values()) == {"applied"}, result.statuses
    assert result.ops == {"npu_rms_norm", "npu_swiglu", "npu_rotary_mul"}, result.ops
    assert result.verdict.status in (Status.PASS, Status.QUALITY_WARNING), result.verdict.message
    assert result.reverted


def test_a_wrong_replacement_is_caught(fake_npu: ModuleType, on_host: None, monkeypatch) -> None:
    """The comparison can fail: a fused RMSNorm that adds epsilon after the square root (and a large
    one) is outside the bound."""

    def bad_rms_norm(x, gamma, epsilon=1e-6):
        xf = x.float()
        return (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + 0.05) * gamma.float()).to(x.dtype), None

    monkeypatch.setattr(fake_npu, "npu_rms_norm", bad_rms_norm)
    assert _compare(_qwen2, transformers_patches()[:1], fake_npu).verdict.status == Status.FAIL


def test_host_tensors_keep_the_original_code(fake_npu: ModuleType) -> None:
    """Without the test's device override the wrappers leave host tensors to transformers."""
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401

    model = _qwen2().eval()
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(2))
    before = _logits(model, ids)
    manager = PatchManager()
    manager.apply_specs("ascend", transformers_patches(), strict=True)
    try:
        after = _logits(model, ids)
    finally:
        manager.revert_all()
    assert torch.equal(before, after) and fake_npu.CALLS == []


def test_every_patch_is_gated_and_explained() -> None:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    specs = transformers_patches()
    assert len(specs) == 6 and len({s.target for s in specs}) == 6
    installed = Version(transformers.__version__)
    for spec in specs:
        assert (
            spec.action == "wrapped" and spec.distribution == "transformers" and spec.versions == TRANSFORMERS
        )
        assert spec.reason and spec.upstream and spec.remove_when
    assert SpecifierSet(TRANSFORMERS).contains(installed, prereleases=True), (
        f"transformers {installed} is outside the verified range {TRANSFORMERS}: re-read the targets and widen it"
    )
