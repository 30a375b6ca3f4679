"""The plan is a pure function of the declared capabilities: claims become must-pass cases where
NOT_SUPPORTED is a failure; what is not claimed is probed."""

from __future__ import annotations

from rlport.types import Capabilities
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
