"""``algorithm.rollout_correction``: rlport's importance weights, rejection masks and metrics
(:mod:`rlport.train.algos.rollout_correction`) against verl's own ``rollout_corr_helper`` functions
(compiled from the installed verl by ``verl_source``) for both ``rollout_is`` levels, TIS and
IcePop thresholds, with and without batch normalisation, and rejection criteria of every kind, on
random batches with ragged masks; the weighted policy losses and the bypass-mode loss against
verl's, loss and gradient; an actor update against the loss written out by hand; bypass mode's old
logprobs; the configuration's checks; two-step demo runs."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Optional

import pytest
import torch
from demo_runs import metrics, run_demo, spawn_ranks
from verl_source import VerlActorConfig, verl_core_algos, verl_functions

from rlport.errors import ConfigError
from rlport.train.algos.loss_agg import MiniBatchSize, micro_share
from rlport.train.algos.masked import response_mask
from rlport.train.algos.policy_losses import POLICY_LOSSES
from rlport.train.algos.rollout_correction import bypass_policy_loss, correct, weighted
from rlport.train.config.correction_thresholds import RS_OPTIONS, is_threshold, rs_checks
from rlport.train.config.load import load_config
from rlport.train.config.schema import AlgorithmConfig, RolloutCorrectionConfig
from rlport.train.data.batch import Sample

HELPER = "verl/trainer/ppo/rollout_corr_helper.py"
RC = "algorithm.rollout_correction."
HELPER_FUNCTIONS = (
    "_parse_rollout_is_threshold",
    "_parse_rollout_rs_thresholds",
    "compute_rollout_rejection_mask",
    "compute_rs_metrics",
    "compute_rollout_correction_weights",
    "compute_is_metrics",
    "compute_rollout_correction_and_rejection_mask",
    "compute_offpolicy_metrics",
)


class _DataProto:
    """Stands in for verl's ``DataProto`` where the helper wraps the weights in one."""

    @staticmethod
    def from_dict(tensors: dict[str, torch.Tensor]) -> SimpleNamespace:
        return SimpleNamespace(batch=tensors)


def _verl_helper() -> SimpleNamespace:
    helpers = verl_functions(
        "verl/utils/torch_functional.py",
        ("masked_sum", "masked_mean", "distributed_masked_mean"),
        {"torch": torch},
    )
    namespace = {
        "torch": torch,
        "math": math,
        "verl_F": SimpleNamespace(**helpers),
        "Optional": Optional,
        "Any": Any,
        "DataProto": _DataProto,
    }
    constants = ("SAFETY_BOUND", "SUPPORTED_ROLLOUT_RS_OPTIONS", "TOKEN_LEVEL_ROLLOUT_RS_OPTIONS")
    return SimpleNamespace(**verl_functions(HELPER, HELPER_FUNCTIONS, namespace, constants))


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Training and engine logprobs (token ratios about e^-0.9 to e^0.9) and a ragged mask, one
    answer without tokens in odd batches."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(1, 10, (8,), generator=g)]
    if seed % 2:
        lengths[seed % 8] = 0
    mask = response_mask(lengths)
    rollout = -(torch.rand(mask.shape, generator=g) * 3 + 0.05)
    old = rollout + torch.randn(mask.shape, generator=g) * 0.3
    return old, rollout, mask, lengths


#: (rollout_is, rollout_is_threshold, batch normalise): TIS and IcePop at both levels
IS_CASES = [
    ("token", "1.3", False),
    ("token", "1.3", True),
    ("token", "0.8_1.25", False),
    ("token", "0.8_1.25", True),
    ("sequence", "2.0", False),
    ("sequence", "2.0", True),
    ("sequence", "0.5_3.0", False),
    ("sequence", "0.5_3.0", True),
]
#: (rollout_rs, rollout_rs_threshold): every statistic and level, chained criteria, a broadcast
RS_CASES = [
    ("token_k1", "0.8_1.25"),
    ("token_k2", "0.02"),
    ("token_k3", "0.03"),
    ("seq_sum_k1", "1.5"),
    ("seq_sum_k2", "0.2"),
    ("seq_mean_k1", "0.85_1.2"),
    ("seq_mean_k3", "0.04"),
    ("seq_max_k2", "0.1"),
    ("seq_max_k3", "0.15"),
    ("token_k2,seq_mean_k1", "0.03,0.9_1.15"),
    ("seq_sum_k3,token_k3", "0.05"),
]


def _rc(**values: Any) -> RolloutCorrectionConfig:
    return RolloutCorrectionConfig(**values)


def _verl_correct(
    verl: SimpleNamespace,
    old: torch.Tensor,
    rollout: torch.Tensor,
    mask: torch.Tensor,
    rc: RolloutCorrectionConfig,
) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    proto, keep, found = verl.compute_rollout_correction_and_rejection_mask(
        old_log_prob=old,
        rollout_log_prob=rollout,
        response_mask=mask,
        rollout_is=rc.rollout_is,
        rollout_is_threshold=rc.rollout_is_threshold,
        rollout_is_batch_normalize=rc.rollout_is_batch_normalize,
        rollout_rs=rc.rollout_rs,
        rollout_rs_threshold=rc.rollout_rs_threshold,
    )
    return (proto.batch["rollout_is_weights"] if proto is not None else None), keep, found


def _assert_metrics_equal(ours: dict[str, float], theirs: dict[str, float], needed: tuple[str, ...]) -> None:
    """Every figure rlport reports is verl's, under verl's name; ``needed`` are reported."""
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))
    for key in needed:
        assert f"rollout_corr/{key}" in ours, key
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key


OFFPOLICY = (
    "kl",
    "k3_kl",
    "training_ppl",
    "rollout_ppl",
    "log_ppl_diff",
    "ppl_ratio",
    "chi2_token",
    "chi2_seq",
)
IS_NEEDED = (
    "rollout_is_mean",
    "rollout_is_max",
    "rollout_is_min",
    "rollout_is_eff_sample_size",
    "rollout_is_std",
)


@pytest.mark.parametrize(("level", "threshold", "normalize"), IS_CASES)
def test_importance_weights_equal_verls(level: str, threshold: str, normalize: bool) -> None:
    """The weights (0 on padding, truncated or zeroed, normalised) and verl's IS and off-policy
    metrics, on three batches; the bound acted on some weights."""
    verl = _verl_helper()
    rc = _rc(rollout_is=level, rollout_is_threshold=threshold, rollout_is_batch_normalize=normalize)
    bounded = False
    for seed in (1, 2, 3):
        old, rollout, mask, _ = _batch(seed)
        ours = correct(old, rollout, mask, rc)
        w, keep, theirs = _verl_correct(verl, old, rollout, mask, rc)
        assert ours.weights is not None and w is not None
        assert torch.allclose(ours.weights, w, rtol=1e-5, atol=1e-7), seed
        assert torch.equal(ours.keep, mask) and torch.equal(keep, mask)
        needed = IS_NEEDED + OFFPOLICY + (("rollout_is_batch_norm_factor",) if normalize else ())
        needed += ("rollout_is_oob_ratio",) if "_" in threshold else ()
        _assert_metrics_equal(ours.metrics, theirs, needed)
        shares = [ours.metrics[f"rollout_corr/rollout_is_ratio_fraction_{s}"] for s in ("high", "low")]
        bounded |= shares[0] > 0 or ("_" in threshold and shares[1] > 0)  # TIS: above; IcePop: outside
    assert bounded


@pytest.mark.parametrize(("options", "threshold"), RS_CASES)
def test_rejection_masks_equal_verls(options: str, threshold: str) -> None:
    """The mask after rejection and verl's rejection metrics; each case rejects some tokens and
    keeps others on at least one batch."""
    verl = _verl_helper()
    rc = _rc(rollout_rs=options, rollout_rs_threshold=threshold)
    rejected = kept = False
    for seed in (1, 2, 3):
        old, rollout, mask, _ = _batch(seed)
        ours = correct(old, rollout, mask, rc)
        w, keep, theirs = _verl_correct(verl, old, rollout, mask, rc)
        assert ours.weights is None and w is None
        assert torch.equal(ours.keep, keep), seed
        names = [o.strip() for o in options.split(",")]
        needed = (
            "rollout_rs_masked_fraction",
            "rollout_rs_seq_masked_fraction",
            *tuple(
                f"rollout_rs_{n}_{what}" for n in names for what in ("mean", "max", "min", "masked_fraction")
            ),
        )
        _assert_metrics_equal(ours.metrics, theirs, needed + OFFPOLICY)
        rejected |= bool(((keep == 0) & (mask > 0)).any())
        kept |= bool(keep.any())
    assert rejected and kept


def test_weights_and_rejection_together_equal_verls() -> None:
    verl = _verl_helper()
    rc = _rc(
        rollout_is="sequence",
        rollout_is_threshold="1.5",
        rollout_rs="token_k1",
        rollout_rs_threshold="0.75_1.3",
    )
    for seed in (4, 5, 6):
        old, rollout, mask, _ = _batch(seed)
        ours = correct(old, rollout, mask, rc)
        w, keep, theirs = _verl_correct(verl, old, rollout, mask, rc)
        assert ours.weights is not None
        assert torch.allclose(ours.weights, w, rtol=1e-5, atol=1e-7) and torch.equal(ours.keep, keep)
        _assert_metrics_equal(ours.metrics, theirs, (*IS_NEEDED, "rollout_rs_masked_fraction"))


@pytest.mark.parametrize("spec", ["2", "2.5", "0.5_5.0", "1_1", "0.9_1.1", " 3 "])
def test_is_thresholds_read_as_verls(spec: str) -> None:
    upper, lower = _verl_helper()._parse_rollout_is_threshold(spec)
    ours = is_threshold(spec)
    assert (ours.upper, ours.lower) == (upper, lower)


@pytest.mark.parametrize(
    ("options", "spec"),
    [
        ("token_k1", "2.0"),
        ("token_k1", "0.5_1.5"),
        ("seq_mean_k2,token_k1", "0.1,0.8_1.2"),
        ("seq_max_k3,seq_sum_k1", "1.5"),
    ],
)
def test_rs_thresholds_read_as_verls(options: str, spec: str) -> None:
    names = [o.strip() for o in options.split(",")]
    theirs = _verl_helper()._parse_rollout_rs_thresholds(names, spec)
    ours = {c.option: {"lower": c.lower, "upper": c.upper} for c in rs_checks(options, spec)}
    assert ours == theirs


def _verl_losses() -> SimpleNamespace:
    return verl_core_algos(
        (
            "agg_loss",
            "compute_policy_loss_vanilla",
            "compute_policy_loss_geo_mean",
            "compute_policy_loss_reinforce",
            "compute_policy_loss_bypass_mode",
        )
    )


def _verl_config(whole: MiniBatchSize, **extra: Any) -> VerlActorConfig:
    """verl's actor config with rlport's clip ratios (no dual clip) and ``whole`` as its global
    batch: the token and sequence counts the loss divides by."""
    sizes = {"dp_size": 1, "batch_num_tokens": whole.tokens, "global_batch_size": whole.sequences}
    return VerlActorConfig(
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=math.inf,
        global_batch_info=sizes,
        **extra,
    )


def _grad_pair(
    start: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return start.clone().requires_grad_(True), start.clone().requires_grad_(True)


@pytest.mark.parametrize("name", ["vanilla", "geo_mean"])
def test_weighted_policy_losses_equal_verls(name: str) -> None:
    """Decoupled mode: the policy loss on the kept tokens, times the weights (geo_mean: their
    geometric mean over the sequence), over the kept token count, as verl's loss with
    ``rollout_is_weights`` on the rejection-masked batch; loss and gradient."""
    verl_fn = getattr(_verl_losses(), f"compute_policy_loss_{name}")
    al = AlgorithmConfig(policy_loss=name, clip_ratio_low=0.2, clip_ratio_high=0.28)
    mode = "seq-mean-token-mean" if name == "geo_mean" else "token-mean"
    rc = _rc(
        rollout_is="token", rollout_is_threshold="1.4", rollout_rs="token_k2", rollout_rs_threshold="0.05"
    )
    for seed in (2, 4, 6):  # answers all with tokens (verl's geo_mean averages over every row)
        old, rollout, mask, lengths = _batch(seed)
        fix = correct(old, rollout, mask, rc)
        assert fix.weights is not None
        g = torch.Generator().manual_seed(seed)
        start = (old + torch.randn(old.shape, generator=g) * 0.2).clamp(max=-1e-3)
        adv = torch.randn(len(lengths), generator=g)
        kept = [int(n) for n in fix.keep.sum(-1)]
        whole = MiniBatchSize.of(lengths, kept)
        assert whole.tokens == int(fix.keep.sum()) < int(mask.sum())  # verl's batch_num_tokens
        a, b = _grad_pair(start)
        pl = weighted(POLICY_LOSSES[name](a, old, adv, fix.keep, al), fix.weights, fix.keep, name)
        ours = micro_share(pl.per_token, fix.keep, mode, whole)
        ours.backward()
        config = _verl_config(whole)
        verl_adv = adv.reshape(-1, 1).expand_as(mask)
        loss, _ = verl_fn(old, b, verl_adv, fix.keep, mode, config, rollout_is_weights=fix.weights)
        loss.backward()
        assert ours.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-7), seed
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), seed
        unweighted = POLICY_LOSSES[name](start, old, adv, fix.keep, al)
        assert micro_share(unweighted.per_token, fix.keep, mode, whole).item() != pytest.approx(loss.item())


@pytest.mark.parametrize("loss_type", ["ppo_clip", "reinforce"])
def test_bypass_loss_equals_verls(loss_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """verl's ``bypass_mode`` loss (which imports the helper: here the compiled one) against
    rlport's, with weights and rejection of the current policy against the engine, over the
    mini-batch's tokens all counted (verl's ``batch_num_tokens`` comes from the batch's mask)."""
    helper = ModuleType("verl.trainer.ppo.rollout_corr_helper")
    helper.compute_rollout_correction_and_rejection_mask = (
        _verl_helper().compute_rollout_correction_and_rejection_mask
    )  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "verl.trainer.ppo.rollout_corr_helper", helper)
    verl_fn = _verl_losses().compute_policy_loss_bypass_mode
    values = {
        "rollout_is": "token",
        "rollout_is_threshold": "1.3",
        "rollout_rs": "token_k3",
        "rollout_rs_threshold": "0.04",
        "bypass_mode": True,
        "loss_type": loss_type,
    }
    al = AlgorithmConfig(clip_ratio_low=0.2, clip_ratio_high=0.28, rollout_correction=_rc(**values))
    for seed in (2, 4, 6):
        old, rollout, mask, lengths = _batch(seed)
        g = torch.Generator().manual_seed(seed + 10)
        adv = torch.randn(mask.shape, generator=g)
        whole = MiniBatchSize.of(lengths)
        a, b = _grad_pair(old.clamp(max=-1e-3))
        pl, found = bypass_policy_loss(a, rollout, adv, mask, al)
        ours = micro_share(pl.per_token, mask, "token-mean", whole)
        ours.backward()
        config = _verl_config(whole, policy_loss=VerlActorConfig(rollout_correction=values))
        loss, theirs = verl_fn(rollout, b, adv, mask, "token-mean", config)
        loss.backward()
        assert ours.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-7), seed
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), seed
        assert float(pl.approx_kl) == pytest.approx(theirs["actor/ppo_kl"], rel=1e-5, abs=1e-7)
        _assert_metrics_equal(found, theirs, ("rollout_rs_masked_fraction", "rollout_is_mean"))
        assert 0 < found["rollout_corr/rollout_rs_masked_fraction"] < 1


# -- the actor ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab=None)


def _actor(model: Path, *extra: str) -> Any:
    import rlport
    from rlport.train.cli import build_config
    from rlport.train.models.actor import Actor

    cfg = build_config(
        [
            f"model.path={model}",
            "actor.strategy=replicated",
            "actor.grad_clip=0",
            "actor.micro_batch_size=2",
            *extra,
        ],
        demo=False,
    )
    torch.manual_seed(0)
    actor = Actor(cfg, path=str(model), device="cpu", rt=rlport.init())
    actor.optimizer = torch.optim.SGD(actor.model.parameters(), lr=1.0)  # the change is the gradient
    return actor


def _samples(actor: Any) -> list[Sample]:
    """Six rollouts of different lengths (``test_train_loss_agg``'s) whose engine logprobs are the
    actor's plus noise (a mismatch of about 0.3 nats per token), so the weights and the rejection act."""
    from test_train_loss_agg import _samples as rollouts

    out = rollouts()
    g = torch.Generator().manual_seed(3)
    for s, lp in zip(out, actor.logprobs(out).raw, strict=True):
        s.engine_logprobs = (lp + torch.randn(lp.shape, generator=g) * 0.3).tolist()
    return out


def _change(actor: Any, samples: list[Sample]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Each weight's change in one update (SGD at rate 1: its gradient) and the update's metrics."""
    before = {n: t.clone() for n, t in actor.full_parameters()}
    stats = actor.update(samples, actor.logprobs(samples))
    return {n: before[n] - t for n, t in actor.full_parameters()}, stats


def _hand_gradient(actor: Any, samples: list[Sample], weigh: Any) -> dict[str, torch.Tensor]:
    """The gradient of ``sum(weigh(logp, engine, mask) * -A * ratio) / kept tokens`` at the
    actor's weights, the ratio ``exp(logp - sg[logp])`` (1, the old logprobs being the actor's
    own); ``weigh`` gives each token's factor and the mask of the tokens kept."""
    from rlport.train.algos.grpo import token_logprobs
    from rlport.train.algos.masked import pad_rows

    actor.model.zero_grad(set_to_none=True)
    logits, tokens, mask = actor._response_outputs(actor.model, samples)
    logp = token_logprobs(logits, tokens, 1.0)
    engine = pad_rows([s.engine_logprobs for s in samples], logp.shape[1])
    factor, keep = weigh(logp.detach(), engine, mask)
    adv = torch.stack([s.advantages[0] for s in samples]).unsqueeze(-1)  # one per sequence
    loss = (factor * keep * -adv * torch.exp(logp - logp.detach())).sum() / keep.sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in actor.model.named_parameters()}


def test_an_update_with_weights_and_rejection_is_the_weighted_loss(tiny_model: Path) -> None:
    """Token TIS at 1.2 and token_k2 rejection: the update (micro-batches of 2) is the gradient
    of the loss written out by hand, and not that of the unweighted loss."""
    extra = (
        "algorithm.rollout_correction.rollout_is=token",
        "algorithm.rollout_correction.rollout_is_threshold=1.2",
        "algorithm.rollout_correction.rollout_rs=token_k2",
        "algorithm.rollout_correction.rollout_rs_threshold=0.04",
    )
    actor = _actor(tiny_model, *extra)
    samples = _samples(actor)

    def weigh(
        logp: torch.Tensor, engine: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_r = logp - engine
        return torch.exp(log_r).clamp(max=1.2), mask * (0.5 * log_r.square() <= 0.04).float()

    want = _hand_gradient(_actor(tiny_model, *extra), samples, weigh)
    got, stats = _change(actor, samples)
    assert 0 < stats["rollout_corr/rollout_rs_masked_fraction"] < 1
    assert stats["rollout_corr/rollout_is_ratio_fraction_high"] > 0
    for name, g in want.items():
        assert torch.allclose(got[name], g, rtol=1e-4, atol=1e-7), name
    plain = _hand_gradient(_actor(tiny_model), samples, lambda lp, e, m: (torch.ones_like(m), m))
    assert any(not torch.allclose(got[n], g, rtol=1e-2, atol=1e-6) for n, g in plain.items())


def test_bypass_mode_takes_the_engines_logprobs(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The old logprobs are the engine's, without a forward of the actor; an update with
    loss_type=reinforce is the gradient of ``-w A logp`` with ``w`` the truncated ratio of the
    current policy to the engine."""
    extra = (
        "algorithm.rollout_correction.bypass_mode=true",
        "algorithm.rollout_correction.loss_type=reinforce",
        "algorithm.rollout_correction.rollout_is=token",
        "algorithm.rollout_correction.rollout_is_threshold=1.2",
    )
    actor = _actor(tiny_model, *extra)
    samples = _samples(_actor(tiny_model))
    forwards = []
    real = actor._response_outputs
    monkeypatch.setattr(actor, "_response_outputs", lambda *a: forwards.append(1) or real(*a))
    lp = actor.logprobs(samples)
    assert forwards == [] and lp.raw == []
    for old, s in zip(lp.old, samples, strict=True):
        assert old.tolist() == pytest.approx(s.engine_logprobs)
    monkeypatch.undo()

    def weigh(
        logp: torch.Tensor, engine: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(logp - engine).clamp(max=1.2), mask  # -w A logp has the gradient of -w A ratio

    want = _hand_gradient(_actor(tiny_model, *extra), samples, weigh)
    got, stats = _change(actor, samples)
    for name, g in want.items():
        assert torch.allclose(got[name], g, rtol=1e-4, atol=1e-7), name
    assert "rollout_corr/rollout_is_mean" in stats


def test_two_ranks_normalise_and_count_as_one(tiny_model: Path, tmp_path: Path) -> None:
    """ddp over two gloo ranks holding 2 and 4 of six answers (``test_train_loss_agg``'s split):
    batch normalisation divides by the mean over both ranks' tokens (one all-reduce) and the
    rejection-masked token count is summed over them, so the update is that of one rank holding
    all six. The engine logprobs there are 0, so the weights (about 0.01) differ by rank."""
    from test_train_loss_agg import _assert_same_update, _gradients, _two_ranks

    extra = (
        RC + "rollout_is=token",
        RC + "rollout_is_batch_normalize=true",
        RC + "rollout_rs=token_k1",
        RC + "rollout_rs_threshold=0.001_100",  # keeps the tokens of logprob above -log(100)
    )
    one = _gradients(tiny_model, "replicated", 0, 1, extra, ("token-mean",))
    out = tmp_path / "grads.pt"
    args = (tiny_model, "ddp", str(tmp_path / "store"), out, extra, ("token-mean",))
    spawn_ranks(_two_ranks, args)
    _assert_same_update(torch.load(out, weights_only=False)["token-mean"], one["token-mean"], "ddp")


# -- configuration ---------------------------------------------------------------------------------


def test_verl_keys_set_the_section() -> None:
    cfg = load_config(
        [
            "algorithm.rollout_correction.rollout_is=sequence",
            "algorithm.rollout_correction.rollout_is_threshold=3",
            "algorithm.rollout_correction.rollout_is_batch_normalize=true",
            "algorithm.rollout_correction.rollout_rs='seq_mean_k1,token_k3'",
            "algorithm.rollout_correction.rollout_rs_threshold='0.5_2.0,0.1'",
        ]
    )
    rc = cfg.algorithm.rollout_correction
    assert (rc.rollout_is, rc.rollout_is_threshold, rc.rollout_is_batch_normalize) == ("sequence", "3", True)
    assert (rc.rollout_rs, rc.rollout_rs_threshold) == ("seq_mean_k1,token_k3", "0.5_2.0,0.1")
    icepop = load_config(["algorithm.rollout_correction.rollout_is_threshold=0.5_2"])
    assert icepop.algorithm.rollout_correction.rollout_is_threshold == "0.5_2"  # not Hydra's 0.52
    assert is_threshold("0.5_2") == is_threshold("0.5_2.0")


#: (overrides, the key named, the value shown, a part of the fix)
BAD_VALUES = [
    ([RC + "rollout_is_threshold=abc"], "rollout_is_threshold", "abc", "=0.5_5.0"),
    ([RC + "rollout_is_threshold=3_1"], "rollout_is_threshold", "3_1", "=2.0"),  # not Hydra's 31
    ([RC + "rollout_is_threshold='0_1'"], "rollout_is_threshold", "0_1", "=2.0"),
    ([RC + "rollout_is=tokens"], "rollout_is", "tokens", "rollout_is="),
    ([RC + "rollout_rs=token_k4"], "rollout_rs", "token_k4", "rollout_rs=token_k3"),
    ([RC + "rollout_rs=token_k2"], "rollout_rs_threshold", None, "rollout_rs_threshold="),
    (
        [RC + "rollout_rs=token_k2", RC + "rollout_rs_threshold=0.5_2"],
        "rollout_rs_threshold",
        "0.5_2",
        "=0.05",
    ),
    (
        [RC + "rollout_rs='token_k2,seq_max_k3'", RC + "rollout_rs_threshold='1,2,3'"],
        "rollout_rs_threshold",
        "1,2,3",
        "=0.05",
    ),
    ([RC + "loss_type=pg"], "loss_type", "pg", "loss_type=ppo_clip"),
]


@pytest.mark.parametrize(("overrides", "key", "shown", "fix"), BAD_VALUES)
def test_bad_values_are_refused_up_front(overrides: list[str], key: str, shown: str | None, fix: str) -> None:
    """Each names the key, the value, what is expected and an override that works."""
    with pytest.raises(ConfigError) as err:
        load_config(overrides)
    assert f"'{RC}{key}' is {shown!r}; expected" in err.value.message
    assert fix in err.value.fix


def test_bypass_mode_needs_temperature_one_and_the_plain_loss() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["algorithm.rollout_correction.bypass_mode=true", "rollout.temperature=0.7"])
    assert "'rollout.temperature' is 0.7" in err.value.message and "temperature 1" in err.value.message
    assert "rollout.temperature=1.0" in err.value.fix
    with pytest.raises(ConfigError) as err:
        load_config(["algorithm.rollout_correction.bypass_mode=true", "algorithm.policy_loss=gspo"])
    assert "'algorithm.policy_loss' is 'gspo'" in err.value.message
    assert "algorithm.policy_loss=vanilla" in err.value.fix
    assert load_config(
        ["algorithm.rollout_correction.bypass_mode=true"]
    ).algorithm.rollout_correction.bypass_mode


def test_every_rejection_criterion_is_verls() -> None:
    assert (
        set(RS_OPTIONS)
        == _verl_helper().compute_rollout_rejection_mask.__globals__["SUPPORTED_ROLLOUT_RS_OPTIONS"]
    )


# -- runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ("algorithm.rollout_correction.rollout_is=token",),
        (
            "algorithm.rollout_correction.rollout_rs=token_k1",
            "algorithm.rollout_correction.rollout_rs_threshold=1.00001",
        ),
        ("algorithm.rollout_correction.bypass_mode=true", "algorithm.rollout_correction.rollout_is=sequence"),
    ],
    ids=["token-is", "rejection", "bypass"],
)
def test_two_demo_steps(extra: tuple[str, ...], tmp_path: Path) -> None:
    """Two steps of the demo; the engine and the actor nearly agree there (hf engine on the same
    weights), so the decoupled weights are about 1. In bypass mode the engine's logprobs are the
    old policy's, so the KL to the engine is the policy's own move over the step's earlier updates
    (``actor/approx_kl``), not near 0."""
    rows = metrics(run_demo(tmp_path / "run", "trainer.steps=2", *extra))
    assert [r["step"] for r in rows] == [1, 2]
    bypass = "bypass_mode=true" in extra[0]
    for r in rows:
        assert math.isfinite(r["actor/pg_loss"])
        if bypass:
            assert r["rollout_corr/kl"] == pytest.approx(r["actor/approx_kl"], rel=1e-6)
        else:
            assert abs(r["rollout_corr/kl"]) < 1e-2
    if bypass:
        assert "rollout/logprob_mismatch" not in rows[0]
        # the current policy against the engine's, after the step's earlier updates: truncated at 2
        assert 0 < rows[0]["rollout_corr/rollout_is_mean"] <= 2.0
    elif "rollout_is" in extra[0]:
        assert rows[0]["rollout_corr/rollout_is_mean"] == pytest.approx(1.0, abs=1e-3)
        assert rows[1]["rollout/logprob_mismatch"] < 1e-4
    else:
        assert 0 <= rows[0]["rollout_corr/rollout_rs_masked_fraction"] <= 1
        assert "rollout_corr/rollout_rs_token_k1_mean" in rows[0]
