"""The plan is a pure function of the declared capabilities: claims become must-pass cases where
NOT_SUPPORTED is a failure; what is not claimed is probed."""

from __future__ import annotations

from rlport.types import Capabilities, HeadDimRange
from rlport_conformance.plan import capabilities_to_dict, plan
from rlport_conformance.status import Status, is_allowed, worst

FULL = capabilities_to_dict(
    Capabilities(
        dtypes=("float32", "bfloat16"),
        head_dims=(64, 128),
        varlen=True,
        gqa=True,
        deterministic=True,
        sleep_tags=("weights",),
        rollout_engines=("hf",),
    )
)


def _ids(declared: dict) -> dict[str, bool]:
    return {c.id: c.claimed for c in plan(declared)}


def _ids_in(declared: dict, profile) -> set[str]:
    return {c.id for c in plan(declared, profile)}


def test_plan_is_deterministic_and_unique() -> None:
    first, second = plan(FULL), plan(dict(FULL))
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert all(c.must_pass for c in first)


def test_claims_are_must_pass_and_unclaimed_are_probes() -> None:
    ids = _ids(FULL)
    assert ids["attention.forward[bfloat16-d128-causal-mha]"] is True
    assert ids["attention.forward[float16-d64-full-mha]"] is False  # dtype not claimed: probe
    assert ids["attention.forward[float32-d59-full-mha]"] is False  # odd head dim: probe
    assert ids["attention.window[float32-d64-w16]"] is False
    assert ids["attention.varlen[bfloat16-d64-causal-mha]"] is True
    assert ids["memory.sleep_frees[weights]"] is True
    assert ids["rollout.sleep_wake[hf]"] is True
    assert "collectives.broadcast[bfloat16-n65537-r2-root1]" in ids


def test_dropping_a_claim_turns_its_cases_into_probes() -> None:
    ids = _ids({**FULL, "varlen": False, "sleep_tags": [], "rollout_engines": []})
    assert ids["attention.varlen[float32-d64-causal-mha]"] is False
    assert "attention.varlen[bfloat16-d64-causal-mha]" not in ids
    assert not any(i.startswith(("memory.sleep_frees", "rollout.")) for i in ids)


def test_not_supported_is_allowed_only_when_not_claimed() -> None:
    assert is_allowed(Status.NOT_SUPPORTED, claimed=False)
    assert not is_allowed(Status.NOT_SUPPORTED, claimed=True)
    assert not is_allowed(Status.MISSING, claimed=False)
    assert worst(Status.PASS, Status.COMPATIBILITY_WARNING, Status.FAIL) is Status.FAIL
    assert worst() is Status.PASS


# -- generated inputs and gradients (rlport_conformance.generated): each rule is in the plan ---------

RANGED = capabilities_to_dict(
    Capabilities(
        dtypes=("bfloat16", "float16"),
        head_dims=(HeadDimRange(64, 256, 32),),
        varlen=True,
        gqa=True,
        sliding_window=True,
    )
)


def test_every_generated_regime_is_planned_per_claimed_dtype() -> None:
    from rlport_conformance.generated import FORWARD_REGIMES

    for declared in (FULL, RANGED):
        ids = _ids(declared)
        for dtype in declared["dtypes"]:
            for regime in FORWARD_REGIMES:
                assert ids[f"attention.generated[{dtype}-{regime}]"] is True


def test_every_gradient_regime_is_planned_per_claimed_dtype() -> None:
    ids = _ids(RANGED)
    for dtype in ("bfloat16", "float16"):
        for regime in ("dense", "mask", "gqa", "window", "varlen"):
            assert ids[f"attention.gradient[{dtype}-{regime}]"] is True
    # what is not claimed is not generated (the listed cases probe it)
    assert "attention.gradient[float32-window]" not in _ids(FULL)
    assert "attention.generated[float32-varlen]" not in _ids({**FULL, "varlen": False})


def _examples(declared: dict, regime: str, n: int = 40) -> list[dict]:
    """The first ``n`` examples the strategy of ``regime`` draws (derandomized, as a case does)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from rlport_conformance import generated as gen

    facet = next(c.facet for c in plan(declared) if c.id == f"attention.generated[bfloat16-{regime}]")
    drawn: list[dict] = []

    def keep(ex: dict) -> None:
        drawn.append(ex)

    test = given(gen.strategy(regime, facet))(keep)
    test = settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )(test)
    seed(1)(test)()
    return drawn + gen.explicit_examples(regime, facet)


def test_generated_head_dims_stay_in_the_claimed_range() -> None:
    for regime in ("dense", "mask", "decode"):
        for ex in _examples(RANGED, regime):
            assert 64 <= ex["head_dim"] <= 256 and ex["head_dim"] % 32 == 0, ex
    assert {ex["head_dim"] for ex in _examples(RANGED, "dense")} - {64, 128}  # not only the usual ones


def test_generated_decode_reaches_32k_keys_across_powers_of_two() -> None:
    lengths = {ex["k_len"] for ex in _examples(RANGED, "decode", 60)}
    assert max(lengths) >= 32768
    assert any(2**p - 1 in lengths or 2**p + 1 in lengths for p in range(8, 16))


def test_generated_magnitudes_overflow_a_naive_softmax() -> None:
    scores = [ex["score"] for ex in _examples(RANGED, "magnitude")]
    assert max(scores) > 88.8  # exp overflows float32 (and bfloat16) past this


def test_generated_masks_are_bool_and_float_with_fully_masked_rows_and_every_shape() -> None:
    masks = [ex["mask"] for ex in _examples(RANGED, "mask", 60)]
    assert {m["kind"] for m in masks} == {"bool", "float"}
    assert {m["kind"] for m in masks if m["empty_rows"]} == {"bool", "float"}
    assert {m["shape"] for m in masks} == {"b1qk", "bhqk", "11qk", "b11k", "1hqk"}


def test_generated_layouts_include_non_contiguous_inputs() -> None:
    import torch

    from rlport_conformance import generated as gen

    layouts = {how for ex in _examples(RANGED, "strided") for how in ex["strides"]}
    assert {"bshd", "every-other", "broadcast"} <= layouts
    for how in ("bshd", "every-other", "broadcast"):
        t = gen._layout_tensor((2, 3, 5, 8), how, seed=1, dtype=torch.float32, device="cpu")
        assert not t.is_contiguous()


def test_generated_varlen_includes_empty_sequences_and_different_q_k_lengths() -> None:
    examples = _examples(RANGED, "varlen", 60)
    assert any(0 in ex["q_lengths"] for ex in examples)
    assert any(q != k for ex in examples for q, k in zip(ex["q_lengths"], ex["k_lengths"], strict=True))


def test_generated_cases_are_reproducible() -> None:
    assert _examples(RANGED, "dense") == _examples(RANGED, "dense")


# -- collectives past the bucket and chunk sizes, with inputs that never repeat ---------------------


def test_large_collectives_cross_the_25mib_bucket_with_every_op_and_claimed_dtype_at_every_world_size() -> (
    None
):
    from rlport_conformance.plan import BUCKET_BYTES, ITEMSIZE, LARGE_BYTES, Profile

    declared = {**FULL, "dtypes": ["float32", "bfloat16", "float16"]}
    cases = [c for c in plan(declared, Profile((2, 3, 4))) if c.facet.get("large")]
    for world in (2, 3, 4):
        mine = [c for c in cases if c.facet["world"] == world]
        sums = {c.facet["dtype"] for c in mine if c.kind == "collectives.all_reduce"}
        assert sums == {"float32", "int32", "bfloat16", "float16"}
        assert {c.facet["op"] for c in mine} == {"all_reduce", "all_gather", "reduce_scatter", "broadcast"}
        ops = {
            (c.facet["reduce_op"], c.facet["dtype"]) for c in mine if c.kind == "collectives.all_reduce_op"
        }
        for op in ("product", "min", "max", "avg"):  # every op at 64 MiB in every dtype (avg: floating)
            floating = {"float32", "bfloat16", "float16"}
            assert {d for o, d in ops if o == op} == (floating if op == "avg" else floating | {"int32"}), op
        for c in mine:
            nbytes = c.facet["count"] * ITEMSIZE[c.facet["dtype"]]
            total = nbytes * world if c.facet["op"] in ("all_gather", "reduce_scatter") else nbytes
            assert total > BUCKET_BYTES and total % BUCKET_BYTES
            assert c.claimed or c.facet["reduce_op"] == "avg"  # avg: claimed through reduce_ops only
            assert total >= LARGE_BYTES


def test_collective_inputs_never_repeat_and_stay_distinct_per_rank() -> None:
    import torch

    from rlport_conformance import collective_worker as cw

    count = 3 * 7 * 2**17
    inputs = [cw.values(r, 0, count) for r in range(4)]
    for chunk in (7, 1024, 7 * 2**17):  # the old pattern repeated every 7 elements
        assert not torch.equal(inputs[0][:chunk], inputs[0][chunk : 2 * chunk])
    stacked = torch.stack(inputs)
    assert all(len(set(col)) == 4 for col in stacked[:, :5000].T.tolist())
    # built a slice at a time, the same values as at once
    assert torch.equal(cw.values(1, 5, 10), cw.values(1, 0, 15)[5:])


def test_probe_is_checked_in_a_fresh_interpreter() -> None:
    assert "platform.probe_isolated" in _ids(FULL)


def test_every_hook_has_a_case() -> None:
    """Every hook in hookspecs.py is called by at least one planned case's code."""
    import inspect
    from pathlib import Path

    from rlport import hookspecs
    from rlport_conformance import cases

    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("rlport_")]
    code = "".join(p.read_text() for p in Path(cases.__file__).parent.glob("test_*.py"))
    code += (Path(cases.__file__).parent.parent / "probe_check.py").read_text()
    code += (Path(cases.__file__).parent.parent / "patch_check.py").read_text()
    # called through the runtime's own paths by the cases: init (device info, worker and collectives
    # env, memory backend, patches), init_process_group (backend, env, preflight), make_engine
    indirect = {
        "rlport_device_info": "rt.device",
        "rlport_worker_env": "worker_env",
        "rlport_collectives_env": "collectives_env",
        "rlport_collectives_backend": "collectives_backend",
        "rlport_collectives_preflight": "preflight",
        "rlport_memory_backend": "rt.memory",
        "rlport_rollout_engines": "make_engine",
        "rlport_engine_args": "make_engine",
        "rlport_patches": "rlport_patches",
        "rlport_attention_backend": "attention_backend",
        "rlport_weight_transport": "weight_transport",
    }
    missing = [h for h in hooks if h not in code and indirect.get(h, "\0") not in code]
    assert not missing, missing
    ids = set(_ids(FULL))
    assert {"platform.supported_stack", "platform.doctor", "platform.allocator_settings[training]"} <= ids


# -- the training hooks --------------------------------------------------------------------------


def test_training_hooks_are_planned() -> None:
    ids = _ids(FULL)
    for strategy in ("replicated", "ddp", "fsdp"):  # fsdp: FSDP2's DTensor parameters
        for label in ("float32", "bfloat16", "mixed"):
            assert ids[f"training.optimizer[adamw-{strategy}-{label}]"] is True
    assert "training.unsupported_strategies" in ids
    for strategy in ("replicated", "ddp", "fsdp", "megatron"):
        assert f"training.before_model_build[{strategy}]" in ids
    assert "training.optimizer[adamw-ddp-bfloat16]" not in _ids({**FULL, "dtypes": ["float32"]})


def test_sharded_optimizer_is_planned_across_ranks_in_multi_device_profiles_only() -> None:
    from rlport_conformance.plan import Profile

    def sharded(declared: dict, profile: Profile) -> dict[str, dict]:
        return {
            c.id: c.facet for c in plan(declared, profile) if c.group == "training" and "world" in c.facet
        }

    cpu = sharded(FULL, Profile((2, 3, 4)))  # the host CPU's profile: once, at 2 ranks
    assert list(cpu) == [
        "training.optimizer[adamw-fsdp-float32-r2]",
        "training.optimizer[adamw-fsdp-mixed-r2]",
    ]
    assert cpu["training.optimizer[adamw-fsdp-mixed-r2]"] == {
        "strategy": "fsdp",
        "dtypes": ("float32", "bfloat16"),
        "world": 2,
    }
    assert list(sharded(FULL, Profile((8,)))) == [
        "training.optimizer[adamw-fsdp-float32-r8]",
        "training.optimizer[adamw-fsdp-mixed-r8]",
    ]
    assert list(sharded({**FULL, "dtypes": ["float32"]}, Profile((2,)))) == [
        "training.optimizer[adamw-fsdp-float32-r2]"
    ]
    single = _ids_in(FULL, Profile((1,)))
    assert not [i for i in single if i.endswith("-r1") and i.startswith("training.")]
    assert "training.optimizer[adamw-fsdp-float32]" in single  # the one-rank fsdp case stays


def test_sharded_optimizer_ranks_differ_and_average_to_the_one_rank_gradients() -> None:
    import torch

    from rlport_conformance.cases import test_training as tt

    _, grads = tt._inputs([])
    for world in (2, 3, 4):
        for step in (0, tt.STEPS - 1):
            ranks = [tt._rank_grads(grads, step, r, world) for r in range(world)]
            for i, g in enumerate(grads[step]):
                assert not torch.equal(ranks[0][i], ranks[1][i])
                torch.testing.assert_close(sum(r[i] for r in ranks) / world, g, rtol=1e-12, atol=0)
    assert tt._rank_grads(grads, 3, 0, 1) is grads[3]


def test_optimizer_case_exercises_lr_change_roundtrip_and_eps() -> None:
    from rlport_conformance.cases import test_training as tt

    assert 0 < tt.LR_CHANGE_AT < tt.ROUNDTRIP_AT < tt.STEPS - 5
    assert tt.TINY < 1e-8 and tt.WEIGHT_DECAY > 0 and tt.BETAS != (0.9, 0.999)


# -- the weight transport --------------------------------------------------------------------------


def test_weight_transport_is_planned_per_engine_and_placement() -> None:
    ids = _ids(FULL)
    assert {"weights.transport[hf-same-process]", "weights.transport[hf-worker]"} <= set(ids)
    assert "weights.transport[hf-worker]" in _ids({**FULL, "rollout_engines": []})  # the reference engine


def test_transport_model_spans_buckets_with_tied_mixed_and_odd_tensors() -> None:
    import torch

    from rlport.rollout.transport import buckets
    from rlport_conformance.cases import test_weights as tw

    named = tw.model("cpu")
    total = sum(t.numel() * t.element_size() for _n, t in named)
    assert total > 3 * tw.BUCKET_BYTES and tw.SYNCS >= 3
    assert len(list(buckets(iter(named), tw.BUCKET_BYTES))) >= 3
    tensors = dict(named)
    assert tensors["lm_head.weight"] is tensors["model.embed_tokens.weight"]
    assert {t.dtype for t in tensors.values()} >= {torch.float32, torch.bfloat16, torch.float16}
    assert any(not t.is_contiguous() for t in tensors.values()) and any(
        t.dim() == 0 for t in tensors.values()
    )
    assert max(t.numel() * t.element_size() for t in tensors.values()) > tw.BUCKET_BYTES


# -- rollout: stop tokens and sampling as distributions ---------------------------------------------


def test_rollout_stop_tokens_and_distributions_are_planned_per_engine() -> None:
    ids = _ids(FULL)
    assert "rollout.stop_tokens[hf]" in ids
    for filters in ("temperature", "top_k", "top_p", "combined"):
        assert ids[f"rollout.distribution[hf-{filters}]"] is True


def test_distribution_bound_keeps_correct_samplers_and_catches_a_short_nucleus() -> None:
    import torch

    from rlport_conformance.cases import test_rollout as tr

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(256, generator=gen, dtype=torch.float64) * 4
    top_k, top_p = tr.choose_filters(logits, 1.5)
    exact = tr.exact_filtered(logits, 1.5, 0, top_p)
    bounds = tr.count_bounds(exact, tr.DIST_SAMPLES, tr.DIST_ALPHA)
    # a correct sampler: 200 seeded runs, none outside the bound
    for seed in range(200):
        draws = torch.multinomial(
            exact, tr.DIST_SAMPLES, replacement=True, generator=torch.Generator().manual_seed(seed)
        )
        counts = torch.bincount(draws, minlength=256).double()
        assert bool(((counts - exact * tr.DIST_SAMPLES).abs() <= bounds).all())
    # the nucleus one token short: the crossing token (at least DIST_MIN_BOUNDARY likely) is missed
    kept = exact > 0
    crossing = int(torch.nonzero(kept).flatten()[torch.argmin(exact[kept])])
    assert exact[crossing] >= tr.DIST_MIN_BOUNDARY * 0.99
    assert float(exact[crossing] * tr.DIST_SAMPLES) > float(bounds[crossing])
    assert int((tr.exact_filtered(logits, 1.5, top_k, 1.0) > 0).sum()) == top_k


def test_memory_cycles_are_planned_for_a_claimed_tag() -> None:
    from rlport_conformance.cases import test_memory as tm

    assert "memory.cycles[weights]" in _ids(FULL)
    assert "memory.cycles[weights]" not in _ids({**FULL, "sleep_tags": []})
    assert tm.MANY_CYCLES >= 20 and tm.FD_GROWTH < tm.MANY_CYCLES


def test_visible_devices_variable_is_checked_in_fresh_interpreters() -> None:
    from rlport_conformance.cases import test_platform as tp

    assert "platform.visible_devices" in _ids(FULL)
    assert "platform.visible_devices" in _ids({**FULL, "sleep_tags": [], "rollout_engines": []})
    # unset: the first device, the last, the first two, then none; set: its own entries, in order
    assert tp.visible_trials(None, 4) == [("0", 1), ("3", 1), ("0,1", 2), ("", 0)]
    assert tp.visible_trials(None, 1) == [("0", 1), ("", 0)]
    assert tp.visible_trials("5, 2,7", 3) == [("5", 1), ("7", 1), ("5,2", 2), ("", 0)]
    assert tp.visible_trials("GPU-a,GPU-b", 1) == [("GPU-a", 1), ("", 0)]


def test_large_reduce_inputs_are_exact_signed_and_never_repeat() -> None:
    """The non-sum ops' inputs: exact results in bfloat16 and float16 (small integers, plus or minus
    powers of two for product), negative values for min/max/product, no repeating pattern."""
    import torch

    from rlport_conformance import collective_worker as cw

    count = 2 * 7 * 2**17
    for op in ("product", "min", "max", "avg"):
        for world in (2, 3, 4):
            inputs = [cw.reduce_inputs(op, r, world, count) for r in range(world)]
            expected = cw.reduce_expected(op, world, count)
            for dtype in (torch.bfloat16, torch.float16):
                assert torch.equal(expected.to(dtype).to(torch.int32), expected), (op, world, dtype)
            assert not torch.equal(expected[: 7 * 2**17], expected[7 * 2**17 :])  # chunks differ
            assert not torch.equal(inputs[0][:7], inputs[0][7:14])
            if op != "avg":
                assert int(min(t.min() for t in inputs)) < 0
            if op == "product":
                assert set(torch.cat(inputs).unique().tolist()) == {-2, -1, 1, 2}
                assert set(expected.abs().unique().tolist()) <= {2**k for k in range(world + 1)}
    # a slice reads the same as the whole
    assert torch.equal(cw.reduce_expected("product", 3, 10, 5), cw.reduce_expected("product", 3, 15)[5:])


def test_memory_cycles_measure_locked_host_memory() -> None:
    """The cycles case's pinned-memory figure sees memory locked in this process (mlock: VmLck)."""
    import ctypes
    import mmap

    from rlport_conformance.cases import test_memory as tm

    nbytes = 4 << 20  # under the usual 8 MiB RLIMIT_MEMLOCK of an unprivileged process
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = mmap.mmap(-1, nbytes)
    address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    before = tm._locked_bytes()
    assert libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(nbytes)) == 0, ctypes.get_errno()
    try:
        assert tm._locked_bytes() - before >= nbytes
    finally:
        libc.munlock(ctypes.c_void_p(address), ctypes.c_size_t(nbytes))
    assert tm._locked_bytes() - before < nbytes
