"""The coverage rules (conformance README, "Coverage rules") as properties of the plan and of the
cases' inputs: each test fails when the suite stops covering its rule. The mutants of
``test_mutants.py`` prove the cases can fail; these prove the plan keeps asking."""

from __future__ import annotations

import math

import pytest
import torch
from mutants import MUTANTS

from rlport.plugins.cpu import plugin as cpu_plugin
from rlport.types import Capabilities, HeadDimRange
from rlport_conformance import attention_math as am
from rlport_conformance import collective_worker as cw
from rlport_conformance import plan as plan_mod
from rlport_conformance.plan import Profile, capabilities_to_dict, plan, profile_for

CPU = capabilities_to_dict(cpu_plugin.rlport_capabilities())
RANGED = capabilities_to_dict(
    Capabilities(
        dtypes=("bfloat16",),
        head_dims=(HeadDimRange(64, 256, 32),),
        varlen=True,
        gqa=True,
        sliding_window=True,
        sleep_tags=("weights", "kv_cache"),
        rollout_engines=("hf", "other"),
        reduce_ops=("sum", "product", "min", "max", "avg"),
    )
)


def _cases(declared: dict, profile: Profile | None = None) -> list[plan_mod.PlannedCase]:
    return plan(declared, profile or profile_for("cpu", 1))


def _of(cases: list[plan_mod.PlannedCase], kind: str) -> list[plan_mod.PlannedCase]:
    return [c for c in cases if c.kind == kind]


# -- rule 1: every contract parameter at non-default values ----------------------------------------


@pytest.mark.parametrize("declared", [CPU, RANGED], ids=["cpu", "ranged"])
def test_rule1_attention_scale_and_masks_per_claimed_dtype(declared: dict) -> None:
    cases = _cases(declared)
    for dtype in declared["dtypes"]:
        scales = [c for c in _of(cases, "attention.scale") if c.facet["dtype"] == dtype]
        assert {c.facet["causal"] for c in scales} == {True, False}
        for c in scales:
            assert not math.isclose(c.facet["scale"], 1 / math.sqrt(c.facet["head_dim"]), rel_tol=0.1)
        masks = {c.facet["mask"]: c for c in _of(cases, "attention.mask") if c.facet["dtype"] == dtype}
        assert {"bool-rows", "float", "float-causal", "bool-scale", "float-scale"} <= set(masks)
        assert masks["bool-scale"].facet["scale"] and masks["float-scale"].facet["scale"]
        assert all(c.claimed for c in masks.values())


def test_rule1_boolean_masks_differ_per_row_and_one_row_is_fully_masked() -> None:
    mask = am.make_mask("bool", 2, 97, 97, seed=3, dtype=torch.float32)
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 97, 97)
    assert not torch.equal(mask[0], mask[1])
    b, row = am.EMPTY_ROW
    assert not mask[b, 0, row].any()
    others = mask.sum(-1) > 0
    others[b, 0, row] = True
    assert others.all()  # every other query attends something
    additive = am.make_mask("float", 2, 97, 97, seed=3, dtype=torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert torch.isinf(additive).any() and (torch.isfinite(additive).sum(-1) > 0).all()
    assert (additive[torch.isfinite(additive)] != 0).any()  # real biases, not just 0/-inf


@pytest.mark.parametrize("declared", [CPU, RANGED], ids=["cpu", "ranged"])
def test_rule1_sampling_filters_at_non_default_values_per_engine(declared: dict) -> None:
    cases = _of(_cases(declared), "rollout.sampling")
    for engine in declared["rollout_engines"]:
        mine = [c.facet for c in cases if c.facet["engine"] == engine]
        assert any(f["temperature"] != 1 and f["top_k"] == 0 and f["top_p"] == 1 for f in mine)
        assert any(f["top_k"] > 0 and f["temperature"] == 1 and f["top_p"] == 1 for f in mine)
        assert any(f["top_p"] < 1 and f["temperature"] == 1 and f["top_k"] == 0 for f in mine)
        assert any(f["temperature"] != 1 and f["top_k"] > 0 and f["top_p"] < 1 for f in mine)


def test_rule1_every_reduce_op_at_every_world_size_with_exact_inputs() -> None:
    cases = _of(_cases(CPU), "collectives.all_reduce_op")
    for world in plan_mod.CPU_WORLD_SIZES:
        ops = {c.facet["reduce_op"] for c in cases if c.facet["world"] == world}
        assert ops == {"product", "min", "max", "avg"}
    assert {c.facet["reduce_op"] for c in _of(_cases(CPU), "collectives.all_reduce")} == {"sum"}
    for op in ("sum", "product", "min", "max", "avg"):
        for world in (2, 3, 4):
            inputs = torch.stack([cw.reduce_inputs(op, r, world, 1023) for r in range(world)])
            expected = cw.reduce_expected(op, world, 1023)
            assert expected.abs().max() <= 256  # exact in bfloat16 (8 significant bits)
            if op == "avg":
                assert (inputs.sum(0) % world == 0).all()
            # the op is distinguishable from SUM: a backend running SUM instead fails the case
            if op != "sum":
                assert not torch.equal(expected, inputs.sum(0))


def test_rule1_avg_is_claimed_through_reduce_ops_and_probed_otherwise() -> None:
    declared = {**CPU, "reduce_ops": ["sum", "product", "min", "max"]}
    avg = [c for c in _of(_cases(declared), "collectives.all_reduce_op") if c.facet["reduce_op"] == "avg"]
    assert avg and not any(c.claimed for c in avg)
    assert all(c.claimed for c in _of(_cases(CPU), "collectives.all_reduce_op"))


# -- rule 2: every claimed capability in every group where it applies ------------------------------


@pytest.mark.parametrize("declared", [CPU, RANGED], ids=["cpu", "ranged"])
def test_rule2_claimed_dtypes_in_attention_collectives_and_memory(declared: dict) -> None:
    cases = _cases(declared)
    for dtype in declared["dtypes"]:
        assert any(c.group == "attention" and c.facet.get("dtype") == dtype and c.claimed for c in cases)
        assert any(c.kind == "memory.dtype_roundtrip" and c.facet["dtype"] == dtype for c in cases)
        if dtype == "bfloat16":
            assert any(c.group == "collectives" and c.facet.get("dtype") == dtype for c in cases)


@pytest.mark.parametrize("declared", [CPU, RANGED], ids=["cpu", "ranged"])
def test_rule2_claimed_head_dims_tags_and_engines_are_must_pass(declared: dict) -> None:
    cases = _cases(declared)
    forward = {(c.facet["dtype"], c.facet["head_dim"]) for c in _of(cases, "attention.forward") if c.claimed}
    for dim in plan_mod.claimed_head_dims(declared):
        assert all((dtype, dim) in forward for dtype in declared["dtypes"])
    for tag in declared["sleep_tags"]:
        assert {"memory.sleep_frees", "memory.wake_restores"} <= {
            c.kind for c in cases if c.facet.get("tag") == tag
        }
    for engine in declared["rollout_engines"]:
        kinds = {c.kind for c in cases if c.facet.get("engine") == engine}
        assert {"rollout.greedy_agreement", "rollout.sampling", "rollout.independent_samples"} <= kinds


def test_rule2_unclaimed_values_are_probed_across_the_range() -> None:
    cases = _cases(RANGED)
    probes = {
        (c.facet["dtype"], c.facet["head_dim"]) for c in _of(cases, "attention.forward") if not c.claimed
    }
    assert {("float32", 64), ("float16", 64)} <= probes  # unclaimed dtypes
    assert {("bfloat16", 59), ("bfloat16", 111)} <= probes  # head dims outside the range
    assert ("bfloat16", 192) not in probes  # inside the claimed range: claimed, not probed
    for dim in plan_mod.PROBE_HEAD_DIMS:
        assert plan_mod.claims_head_dim(RANGED, dim) or ("bfloat16", dim) in probes


def test_rule2_the_reference_answering_is_never_credited() -> None:
    """The attention cases take the reference's answer as a deferral: FAIL when claimed,
    NOT_SUPPORTED when not (proven on a plugin by the ``bf16_deferred`` mutant)."""
    from rlport.reference import NAME
    from rlport_conformance.cases import test_attention

    assert test_attention.REFERENCE == NAME
    assert any(m.defect == "bf16_deferred" and m.rule == 2 for m in MUTANTS)


# -- rule 3: kernel regimes ------------------------------------------------------------------------


def test_rule3_decode_lengths_cross_powers_of_two_into_the_thousands() -> None:
    lengths = {c.facet["k_len"] for c in _of(_cases(CPU), "attention.decode") if c.facet["q_len"] == 1}
    assert 1 in lengths and max(lengths) > 4096
    for power in (128, 256, 2048):
        assert {power - 1, power, power + 1} <= lengths
    for power in (1024, 4096):
        assert {power, power + 1} <= lengths
    assert len(lengths) < 40  # sampled, not every value


def test_rule3_chunked_prefill_causal_and_windowed() -> None:
    cases = _of(_cases(CPU), "attention.chunked_prefill")
    assert all(1 < c.facet["q_len"] < c.facet["k_len"] for c in cases)
    assert {c.facet["window"] for c in cases} == {None, plan_mod.SLIDING_WINDOW}
    assert all(c.claimed for c in cases)  # the CPU plugin claims the window


def test_rule3_varlen_with_different_query_and_key_lengths() -> None:
    from rlport_conformance.cases import test_attention as ta

    assert _of(_cases(CPU), "attention.varlen_qk")
    assert len(ta.VARLEN_Q_LENGTHS) == len(ta.VARLEN_K_LENGTHS)
    assert ta.VARLEN_Q_LENGTHS != ta.VARLEN_K_LENGTHS
    assert all(q <= k for q, k in zip(ta.VARLEN_Q_LENGTHS, ta.VARLEN_K_LENGTHS, strict=True))


@pytest.mark.parametrize("declared", [CPU, RANGED], ids=["cpu", "ranged"])
def test_rule3_head_dims_between_128_and_256_that_are_not_powers_of_two(declared: dict) -> None:
    dims = {c.facet["head_dim"] for c in _of(_cases(declared), "attention.forward")}
    assert {d for d in dims if 128 < d < 256 and d & (d - 1)}, dims


def test_rule3_claimed_range_is_tested_at_its_ends_and_model_dims() -> None:
    assert plan_mod.claimed_head_dims(RANGED) == [64, 96, 128, 160, 192, 224, 256]
    odd = capabilities_to_dict(Capabilities(head_dims=(HeadDimRange(33, 250, 8), 7)))
    assert plan_mod.claimed_head_dims(odd) == [7, 40, 48, 64, 72, 80, 96, 112, 128, 160, 192, 224, 248]


def test_rule3_memory_large_and_many_tensors() -> None:
    cases = _cases(CPU)
    (large,) = _of(cases, "memory.large_tensor")
    assert large.facet["nbytes"] >= 256 * 2**20 and large.facet["nbytes"] & (large.facet["nbytes"] - 1)
    (many,) = _of(cases, "memory.many_tensors")
    assert many.facet["count"] >= 64


# -- rule 4: world sizes ---------------------------------------------------------------------------


def test_rule4_every_collective_at_2_3_and_4_ranks_on_the_host() -> None:
    profile = profile_for("cpu", 1)
    assert profile.world_sizes == (2, 3, 4)
    cases = [c for c in _cases(CPU, profile) if c.group == "collectives"]
    for kind in {c.kind for c in cases}:
        assert {c.facet["world"] for c in cases if c.kind == kind} == {2, 3, 4}, kind
    assert {
        c.facet["root"] for c in cases if c.kind == "collectives.broadcast" and c.facet["world"] == 4
    } == {
        0,
        1,
        2,
        3,
    }


def test_rule4_devices_and_world_size_choose_the_profile() -> None:
    assert profile_for("cuda", 8).world_sizes == (8,)
    assert profile_for("cuda", 1).name == "single-device"
    assert profile_for("cpu", 1, world_size=1).name == "single-device"
    single = [c for c in _cases(CPU, profile_for("cpu", 1, 1)) if c.group == "collectives"]
    assert single and {c.facet["world"] for c in single} == {1}


# -- rule 5: patches preserve behaviour ------------------------------------------------------------


def test_rule5_patched_models_and_targets() -> None:
    ids = {c.id for c in _cases(CPU)}
    assert {"patches.roundtrip", "patches.targets"} <= ids
    assert {"patches.model_equivalence[qwen2]", "patches.model_equivalence[llama]"} <= ids


def test_rule5_equivalence_models_are_real_and_sensitive_to_norm_weights() -> None:
    """The equivalence models are transformers' own classes with norm weights off 1 (a patch that
    drops the weight would otherwise change nothing)."""
    from rlport_conformance import patch_equivalence as pe

    for family in plan_mod.PATCH_MODELS:
        model = pe._model(family)
        assert type(model).__module__.startswith(f"transformers.models.{family}.")
        norms = [p for n, p in model.named_parameters() if "norm" in n]
        assert norms and all(not torch.allclose(p, torch.ones_like(p)) for p in norms)


# -- rule 6: independent checks --------------------------------------------------------------------


def test_rule6_memory_against_the_operating_system() -> None:
    from rlport_conformance.cases import test_memory as tm

    assert "memory.os_figures" in {c.id for c in _cases(CPU)}
    assert 0 < tm.HOST_FREE_TOLERANCE <= 0.05 and tm.HELD_SHARE >= 0.5


# -- the mutants: at least one per rule, twelve or more beyond the first sixteen --------------------


def test_every_rule_has_mutants() -> None:
    rules = [m.rule for m in MUTANTS if m.rule is not None]
    assert set(rules) == set(range(1, 15))
    assert len(rules) >= 12
    assert len({m.defect for m in MUTANTS}) == len(MUTANTS)
