"""``algorithm.policy_loss``: each loss of :mod:`rlport.train.algos.policy_losses` against verl's own
``compute_policy_loss_<name>`` (compiled from the installed verl by ``verl_source``): the loss of
the mini-batch and its gradient in every ``loss_agg_mode`` the loss takes, and verl's metrics, on
random batches with ragged masks and ratios well away from 1; the token selection of ``clip_cov``
and ``kl_cov`` by hand; verl's keys; an update the same in any micro-batches; two demo steps with
each loss.

``clip_cov`` draws its tokens with ``torch.randperm`` as verl does, so the comparison seeds the
global generator alike before rlport's call and verl's, and checks that another seed draws other
tokens (the draw matters, and both follow it)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from demo_runs import metrics, run_demo
from verl_source import VerlActorConfig, verl_core_algos

from rlport.train.algos.loss_agg import MiniBatchSize, micro_share
from rlport.train.algos.policy_losses import POLICY_LOSSES as TABLE
from rlport.train.algos.policy_losses import clip_cov_selection, kl_cov_selection
from rlport.train.config.choices import LOSS_AGG_MODES, POLICY_LOSSES, SEQUENCE_MEAN_LOSSES
from rlport.train.config.load import load_config
from rlport.train.config.schema import AlgorithmConfig, PolicyLossOptions

NORM = 7.0
#: each loss's settings in the comparison: away from the defaults where those make it trivial
SETTINGS: dict[str, dict[str, Any]] = {
    "vanilla": {"clip_ratio_c": 3.0},
    "gspo": {},
    "gpg": {},
    "geo_mean": {},
    "cispo": {},
    "clip_cov": {"options": {"clip_cov_ratio": 0.15, "clip_cov_lb": 0.02, "clip_cov_ub": 2.0}},
    "kl_cov": {"options": {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5}},
    "sapo": {"options": {"tau_pos": 1.5, "tau_neg": 3.0}},
    "dro": {"options": {"dro_beta": 0.3}},
    "dppo_tv": {"clip_ratio_c": 2.0, "clip_ratio_low": 0.05, "clip_ratio_high": 0.08},
    "dppo_kl": {"clip_ratio_c": 2.0, "clip_ratio_low": 0.05, "clip_ratio_high": 0.08},
}
METRICS = {
    "actor/pg_clipfrac": "clip_frac",
    "actor/pg_clipfrac_lower": "clip_frac_lower",
    "actor/ppo_kl": "approx_kl",
}


def _algorithm(name: str) -> AlgorithmConfig:
    s = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, **SETTINGS[name]}
    options = PolicyLossOptions(**s.pop("options", {}))
    return AlgorithmConfig(policy_loss=name, policy_loss_options=options, **s)


def _verl_config(al: AlgorithmConfig) -> VerlActorConfig:
    """verl's actor config holding ``al``'s settings (``clip_ratio_c`` 0, rlport's off, is no cap)."""
    o = al.policy_loss_options
    return VerlActorConfig(
        clip_ratio=al.clip_ratio_low,
        clip_ratio_low=al.clip_ratio_low,
        clip_ratio_high=al.clip_ratio_high,
        clip_ratio_c=al.clip_ratio_c or math.inf,
        tau_pos=o.tau_pos,
        tau_neg=o.tau_neg,
        policy_loss=VerlActorConfig(**dataclasses.asdict(o)),
        global_batch_info={"loss_scale_factor": NORM},
    )


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """old logprobs, new ones (ratios from about e^-1.2 to e^1.2), advantages and a ragged mask
    (one answer without tokens); odd seeds give one advantage per sequence, even ones per token."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(1, 12, (7,), generator=g)]
    lengths[seed % 7] = 0
    width = max(lengths)
    mask = torch.zeros(len(lengths), width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    old = -(torch.rand(mask.shape, generator=g) * 3 + 0.01)
    new = (old + torch.randn(mask.shape, generator=g) * 0.4).clamp(max=-1e-3)
    adv = torch.randn((len(lengths),) if seed % 2 else tuple(mask.shape), generator=g)
    return old, new, adv, mask, lengths


def _verl_losses() -> Any:
    return verl_core_algos(("agg_loss", *(f"compute_policy_loss_{n}" for n in POLICY_LOSSES)))


def test_the_table_holds_every_configured_loss() -> None:
    assert tuple(TABLE) == POLICY_LOSSES


@pytest.mark.parametrize("name", POLICY_LOSSES)
def test_loss_and_gradient_equal_verls(name: str) -> None:
    """Three batches, every mode the loss takes (geo_mean and sapo: seq-mean-token-mean, which
    verl uses whatever it is told): rlport's mini-batch loss and d loss / d logp equal verl's to
    1e-5, and so do verl's metrics. verl's geo_mean is the mean over all rows, an answer without
    tokens counting as 0; rlport's is over answers with tokens."""
    verl_fn = getattr(_verl_losses(), f"compute_policy_loss_{name}")
    al = _algorithm(name)
    config = _verl_config(al)
    ours_fn = TABLE[name]
    modes = ("seq-mean-token-mean",) if name in SEQUENCE_MEAN_LOSSES else LOSS_AGG_MODES
    clipped_somewhere = False
    for seed in (1, 2, 3):
        old, start, adv, mask, lengths = _batch(seed)
        whole = MiniBatchSize.of(lengths)
        verl_adv = adv.reshape(-1, 1).expand_as(mask) if adv.ndim == 1 else adv
        scale = whole.sequences / len(lengths) if name == "geo_mean" else 1.0
        for mode in modes:
            a = start.clone().requires_grad_(True)
            torch.manual_seed(seed)
            ours = ours_fn(a, old, adv, mask, al)
            share = micro_share(ours.per_token, mask, mode, whole, norm=NORM) * scale
            share.backward()
            b = start.clone().requires_grad_(True)
            torch.manual_seed(seed)
            loss, verl_metrics = verl_fn(old, b, verl_adv, mask, mode, config)
            loss.backward()
            assert share.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-7), (seed, mode)
            assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), (seed, mode)
            assert float(a.grad.abs().sum()) > 0
            for key, slot in METRICS.items():
                if key in verl_metrics:
                    assert float(getattr(ours, slot)) == pytest.approx(
                        verl_metrics[key], rel=1e-5, abs=1e-7
                    ), key
            clipped_somewhere |= float(ours.clip_frac) > 0
    if name not in ("gpg", "kl_cov", "sapo", "dro"):  # those have no clip fraction
        assert clipped_somewhere  # the clip (or the selection) was exercised


def test_clip_cov_draw_follows_the_seed() -> None:
    """The same seed draws the same tokens in rlport and verl (above), and another seed other ones:
    more candidates than the budget, so the draw decides."""
    old, logp, adv, mask, _ = _batch(3)
    al = _algorithm("clip_cov")
    adv = adv.expand_as(mask) if adv.ndim == 2 else adv.reshape(-1, 1).expand_as(mask)
    ratio = torch.exp(logp - old)
    clipped = -adv * torch.clamp(ratio, 0.8, 1.28) > -adv * ratio
    torch.manual_seed(0)
    first = clip_cov_selection(adv, logp, mask, clipped, al)
    torch.manual_seed(0)
    again = clip_cov_selection(adv, logp, mask, clipped, al)
    torch.manual_seed(1)
    other = clip_cov_selection(adv, logp, mask, clipped, al)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert int(first.sum()) == int(other.sum()) == max(int(0.15 * mask.sum()), 1)


def test_covariance_selections_by_hand() -> None:
    """Four tokens, advantages (1, -1, 1, -1), logprobs (-1, -3, -3, -1) (means 0 and -2): the
    covariance terms are 1, 1, -1, -1. clip_cov takes candidates strictly inside (lb, ub) that
    PPO did not clip (all of them with ratio 1); kl_cov the top max(1, int(ratio x 4))."""
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    logp = torch.tensor([[-1.0, -3.0, -3.0, -1.0]])
    mask = torch.ones(1, 4)
    wide = AlgorithmConfig(
        policy_loss_options=PolicyLossOptions(clip_cov_ratio=1.0, clip_cov_lb=0.5, clip_cov_ub=2.0)
    )
    none_clipped = torch.zeros(1, 4, dtype=torch.bool)
    assert clip_cov_selection(adv, logp, mask, none_clipped, wide).tolist() == [[True, True, False, False]]
    first_clipped = torch.tensor([[True, False, False, False]])
    assert clip_cov_selection(adv, logp, mask, first_clipped, wide).tolist() == [[False, True, False, False]]
    narrow = AlgorithmConfig(policy_loss_options=PolicyLossOptions(clip_cov_ratio=1.0, clip_cov_lb=1.0))
    assert not clip_cov_selection(adv, logp, mask, none_clipped, narrow).any()  # 1 is not above lb=1
    half = AlgorithmConfig(policy_loss_options=PolicyLossOptions(kl_cov_ratio=0.5))
    assert kl_cov_selection(adv, logp, mask, half).sum(-1).tolist() == [2]
    assert kl_cov_selection(adv, logp, mask, half)[0, 2:].tolist() == [False, False]
    tiny = AlgorithmConfig(policy_loss_options=PolicyLossOptions(kl_cov_ratio=1e-4))
    assert int(kl_cov_selection(adv, logp, mask, tiny).sum()) == 1  # at least one token
    padded = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # padding is never chosen
    assert not kl_cov_selection(adv, logp, padded, half)[0, 2:].any()


def test_verl_keys_set_the_options() -> None:
    cfg = load_config(
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov",
            "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.001",
            "actor_rollout_ref.actor.policy_loss.clip_cov_lb=0.5",
            "actor_rollout_ref.actor.policy_loss.clip_cov_ub=4.0",
            "actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.003",
            "actor_rollout_ref.actor.policy_loss.ppo_kl_coef=2.0",
            "actor_rollout_ref.actor.policy_loss.dro_beta=0.2",
            "actor_rollout_ref.actor.tau_pos=1.5",
            "actor_rollout_ref.actor.tau_neg=2.5",
        ]
    )
    assert cfg.algorithm.policy_loss == "clip_cov"
    assert cfg.algorithm.policy_loss_options == PolicyLossOptions(0.001, 0.5, 4.0, 0.003, 2.0, 1.5, 2.5, 0.2)


def test_loss_needs_are_config_errors() -> None:
    from rlport.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(["actor_rollout_ref.actor.policy_loss.loss_mode=dro"])
    assert "'algorithm.policy_loss_options.dro_beta' is None" in err.value.message
    assert "algorithm.policy_loss_options.dro_beta=0.1" in err.value.fix
    for name in SEQUENCE_MEAN_LOSSES:
        # verl's geo_mean / sapo ignore loss_agg_mode (its GMPO example commands set token-mean)
        cfg = load_config([f"actor_rollout_ref.actor.policy_loss.loss_mode={name}"])
        assert cfg.algorithm.loss_agg_mode == "seq-mean-token-mean"
        with pytest.raises(ConfigError) as err:  # ... but would aggregate the KL loss by it
            load_config([f"algorithm.policy_loss={name}", "algorithm.use_kl_loss=true"])
        assert f"seq-mean-token-mean with algorithm.policy_loss={name} and the KL loss" in err.value.message
        assert err.value.fix == "rlport train algorithm.loss_agg_mode=seq-mean-token-mean"
    with pytest.raises(ConfigError) as err:
        load_config(["actor_rollout_ref.actor.policy_loss.loss_mode=bypass_mode"])
    assert "algorithm.rollout_correction.bypass_mode=true" in err.value.message
    assert "dppo_kl" in err.value.message


#: what each loss needs beside its name in a run
RUN_EXTRA: dict[str, tuple[str, ...]] = {
    "dro": ("algorithm.policy_loss_options.dro_beta=0.1",),
    "clip_cov": ("algorithm.policy_loss_options.clip_cov_ratio=0.1",),
    "kl_cov": ("algorithm.policy_loss_options.kl_cov_ratio=0.1",),
}


@pytest.mark.parametrize("name", [n for n in POLICY_LOSSES if n not in ("vanilla", "gspo", "gpg")])
def test_each_loss_trains_the_demo(name: str, tmp_path: Path) -> None:
    rows = metrics(
        run_demo(
            tmp_path / "run", "trainer.steps=2", f"algorithm.policy_loss={name}", *RUN_EXTRA.get(name, ())
        )
    )
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["actor/pg_loss"]) and math.isfinite(r["actor/approx_kl"]) for r in rows)
    assert rows[1]["rollout/logprob_mismatch"] < 1e-4  # the update reached the engine


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rlport.rollout.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab=None)


@pytest.mark.parametrize("name", ["geo_mean", "cispo", "sapo", "dro", "dppo_tv"])
def test_an_update_does_not_depend_on_the_micro_batches(name: str, tiny_model: Path) -> None:
    """A mini-batch of 6 in micro-batches of 6 or of 1: the same gradient (geo_mean's mean over
    sequences included). clip_cov and kl_cov choose their tokens per micro-batch, as verl does, so
    they are left out."""
    from test_train_loss_agg import _update

    extra = (f"algorithm.policy_loss={name}", *RUN_EXTRA.get(name, ()))
    whole = _update(tiny_model, *extra, "actor.micro_batch_size=6")
    cut = _update(tiny_model, *extra, "actor.micro_batch_size=1")
    for key, g in whole.items():
        assert torch.allclose(cut[key], g, rtol=1e-4, atol=1e-7), key
    assert any(float(g.abs().sum()) > 0 for g in whole.values())
