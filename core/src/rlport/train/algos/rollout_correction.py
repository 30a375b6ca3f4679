"""Rollout correction (verl's ``algorithm.rollout_correction.*``): the rollouts were sampled by
the engine, whose logprobs differ from the training policy's (another kernel, dtype or stale
weights), so the update re-weighs or drops their tokens.

Everything starts from the per-token log-ratio ``log r = old - rollout``: the training policy's
logprob (the actor's recomputation; in bypass mode the current one) minus the engine's.

- :func:`importance_weights` (``rollout_is``): ``r`` per token, or the sequence's product of
  ratios on each of its tokens, truncated at the threshold (TIS) or zeroed outside a range
  (IcePop), optionally divided by their batch mean; detached: they multiply the policy loss.
- :func:`rejection_mask` (``rollout_rs``): tokens, or whole sequences, whose divergence statistic
  fails a criterion leave the loss.
- :func:`offpolicy_metrics`: KL, perplexities and chi-square between the two policies.
- :func:`correct` combines them under the ``rollout_corr/`` prefix, with verl's metric names.
- :func:`bypass_policy_loss` (``bypass_mode``): the engine's logprobs are the old ones (no
  recomputation), and the loss is PPO's clip (``loss_type=ppo_clip``) or REINFORCE weighted by the
  importance weights (``reinforce``).

Exponentials are taken of log-ratios clamped to [-20, 20], as verl clamps them. Each function
equals verl's (``core/tests/test_train_rollout_correction.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from rlport.train.algos.masked import masked_max, masked_mean, masked_min, masked_share, row_mean, row_sum
from rlport.train.algos.policy_losses import PolicyLoss, _token_advantages, clipped_policy_loss
from rlport.train.config.correction_thresholds import IsThreshold, RsCheck, is_threshold, rs_checks
from rlport.train.config.schema import AlgorithmConfig, RolloutCorrectionConfig

SAFETY_BOUND = 20.0
#: sums a 1-D tensor over the data-parallel ranks (one all-reduce); None: this rank alone
AllReduce = Callable[[Tensor], Tensor] | None


def enabled(rc: RolloutCorrectionConfig) -> bool:
    """Whether the run corrects at all: importance weights, rejection or bypass mode."""
    return rc.rollout_is is not None or rc.rollout_rs is not None or rc.bypass_mode


def _safe_exp(log_values: Tensor) -> Tensor:
    return torch.exp(log_values.clamp(-SAFETY_BOUND, SAFETY_BOUND))


@dataclass
class Correction:
    """The correction of one batch: ``weights`` (``(rows, width)``, detached, 0 on padding;
    None without ``rollout_is``), ``keep`` (the response mask less the rejected tokens) and the
    ``rollout_corr/`` metrics."""

    weights: Tensor | None
    keep: Tensor
    metrics: dict[str, float]


# -- importance weights --------------------------------------------------------------------------


def importance_weights(
    log_ratio: Tensor,
    mask: Tensor,
    level: str,
    threshold: IsThreshold,
    *,
    normalize: bool = False,
    all_reduce: AllReduce = None,
) -> tuple[Tensor, dict[str, float]]:
    """The weights of ``level`` ``token`` (``r`` of each token) or ``sequence`` (the product of
    the sequence's ratios, on each of its tokens), bounded by ``threshold``, and their metrics.
    ``normalize`` divides them by their mean (over tokens, or over sequences), summed over the
    ranks by ``all_reduce``."""
    log_ratio, mask = log_ratio.detach(), mask.to(log_ratio.dtype)
    if level == "token":
        log_stat = log_ratio
        raw = _safe_exp(log_ratio)
    elif level == "sequence":
        log_stat = row_sum(log_ratio, mask).unsqueeze(-1)
        raw = _safe_exp(log_stat).expand_as(log_ratio)
    else:
        raise ValueError(f"rollout_is {level!r} is not one of token, sequence")
    raw = raw * mask
    if threshold.lower is None:
        weights = raw.clamp(max=threshold.upper)
    else:
        inside = (raw >= threshold.lower) & (raw <= threshold.upper)
        weights = torch.where(inside, raw, torch.zeros_like(raw))
    metrics = is_metrics(weights, raw, log_stat, mask, level, threshold)
    if normalize:
        if level == "token":
            total = torch.stack([(weights * mask).sum(), mask.sum()])
        else:
            has_tokens = (mask.sum(-1) > 0).to(weights.dtype)
            total = torch.stack([(row_mean(weights, mask) * has_tokens).sum(), has_tokens.sum()])
        if all_reduce is not None:
            total = all_reduce(total)
        mean = float(total[0] / total[1].clamp_min(1e-8))
        if mean > 1e-8:
            weights = weights / mean
        metrics["rollout_is_batch_norm_factor"] = mean if mean > 1e-8 else 1.0
    return weights, metrics


def is_metrics(
    weights: Tensor, raw: Tensor, log_stat: Tensor, mask: Tensor, level: str, threshold: IsThreshold
) -> dict[str, float]:
    """verl's figures of the weights: mean, max, min, std, effective sample size (``1 / E[w^2]``
    of the weights over their mean), the shares above and below the bounds, per-sequence means;
    ``log_stat`` is the log-ratio (per token, or per sequence) before any bound."""
    upper = threshold.upper
    lower = threshold.lower if threshold.lower is not None else 1.0 / upper
    m: dict[str, float] = {"rollout_is_mean": float(masked_mean(weights, mask).item())}
    if level == "sequence":
        m["rollout_is_max"] = math.exp(min(float(log_stat.max()), SAFETY_BOUND))
        m["rollout_is_min"] = math.exp(float(log_stat.min()))
        m["rollout_is_ratio_fraction_high"] = float((log_stat > math.log(upper)).float().mean())
        m["rollout_is_ratio_fraction_low"] = float((log_stat < math.log(lower)).float().mean())
    else:
        m["rollout_is_ratio_fraction_high"] = masked_share(raw > upper, mask)
        m["rollout_is_ratio_fraction_low"] = masked_share(raw < lower, mask)
        m["rollout_is_max"] = masked_max(weights, mask)
        m["rollout_is_min"] = masked_min(weights, mask)
    bounded = weights.clamp(0.0, upper)
    mean = masked_mean(bounded, mask)
    if mask.sum() > 1:
        var = masked_mean(bounded.square(), mask) - mean.square()
        m["rollout_is_std"] = float(var.clamp_min(0.0).sqrt())
    else:
        m["rollout_is_std"] = 0.0
    second = float(masked_mean((bounded / (mean + 1e-8)).square(), mask))
    m["rollout_is_eff_sample_size"] = 1.0 / second if second > 0 else 0.0
    seq = row_mean(weights, mask)
    m["rollout_is_seq_mean"] = float(seq.mean())
    m["rollout_is_seq_std"] = float(seq.std()) if seq.numel() > 1 else 0.0
    m["rollout_is_seq_max"] = float(seq.max())
    m["rollout_is_seq_min"] = float(seq.min())
    m["rollout_is_seq_max_deviation"] = float((seq - 1.0).abs().max())
    raw_seq = row_mean(raw, mask)
    m["rollout_is_seq_fraction_high"] = float((raw_seq > upper).float().mean())
    m["rollout_is_seq_fraction_low"] = float((raw_seq < lower).float().mean())
    if threshold.lower is not None:
        m["rollout_is_oob_ratio"] = masked_share((raw < threshold.lower) | (raw > upper), mask)
    return m


# -- rejection -----------------------------------------------------------------------------------


def _statistic(option: str, log_ratio: Tensor, mask: Tensor) -> tuple[Tensor, bool]:
    """The value ``option`` is judged by: per token ``(rows, width)``, or per sequence
    ``(rows,)``; and whether it is per sequence."""
    level, _, k = option.rpartition("_")
    per_token = {
        "k1": -log_ratio,
        "k2": 0.5 * log_ratio.square(),
        "k3": torch.exp(log_ratio) - 1.0 - log_ratio,
    }[k]
    if level == "token":
        return per_token, False
    if level == "seq_sum":
        return row_sum(per_token, mask), True
    if level == "seq_mean":
        return row_mean(per_token, mask), True
    highest = per_token.masked_fill(mask <= 0, -math.inf).max(-1).values
    return torch.where(torch.isinf(highest), torch.zeros_like(highest), highest), True


def rejection_mask(
    log_ratio: Tensor, mask: Tensor, checks: tuple[RsCheck, ...]
) -> tuple[Tensor, dict[str, float]]:
    """``mask`` without the tokens that fail any of ``checks`` (a sequence criterion takes out
    the whole sequence), and per criterion the statistic's mean, max and min (over sequences for
    a sequence criterion), the shares beyond its bounds and the shares of tokens and of
    sequences it rejected; then the shares rejected by all of them."""
    log_ratio = log_ratio.detach().clamp(-SAFETY_BOUND, SAFETY_BOUND)
    mask = mask.to(log_ratio.dtype)
    valid, has_tokens = mask > 0, mask.sum(-1) > 0
    keep = torch.ones_like(mask)
    m: dict[str, float] = {}
    for check in checks:
        value, per_sequence = _statistic(check.option, log_ratio, mask)
        if check.lower is not None:  # k1: ratio bounds, compared in log space
            high, low = math.log(check.upper), math.log(check.lower)
            passed = (value >= low) & (value <= high)
        else:
            high, low = check.upper, 0.0
            passed = value <= high
        p = f"rollout_rs_{check.option}"
        if per_sequence:
            passed = passed.unsqueeze(-1).expand_as(mask)
            on_tokens = value.unsqueeze(-1).expand_as(mask)
            judged = value[has_tokens] if has_tokens.any() else torch.zeros(1, dtype=value.dtype)
            m[f"{p}_max"], m[f"{p}_min"] = float(judged.max()), float(judged.min())
            m[f"{p}_fraction_high"] = float((judged > high).float().mean())
            m[f"{p}_fraction_low"] = float((judged < low).float().mean()) if check.lower else 0.0
        else:
            on_tokens = value
            m[f"{p}_max"], m[f"{p}_min"] = masked_max(value, mask), masked_min(value, mask)
            m[f"{p}_fraction_high"] = masked_share(value > high, mask)
            m[f"{p}_fraction_low"] = masked_share(value < low, mask) if check.lower else 0.0
        m[f"{p}_mean"] = float(masked_mean(on_tokens, mask))
        passed = passed.to(mask.dtype)
        keep = keep * passed
        m[f"{p}_masked_fraction"] = float(masked_mean(1.0 - passed, mask))
        rejected_rows = ((passed <= 0) & valid).any(-1)
        m[f"{p}_seq_masked_fraction"] = (
            float(rejected_rows[has_tokens].float().mean()) if has_tokens.any() else 0.0
        )
    m["rollout_rs_masked_fraction"] = float(masked_mean(1.0 - keep, mask))
    m["rollout_rs_seq_masked_fraction"] = float(((keep <= 0.5) & valid).any(-1).float().mean())
    return mask * keep, m


# -- off-policy figures --------------------------------------------------------------------------


def offpolicy_metrics(old: Tensor, rollout: Tensor, mask: Tensor) -> dict[str, float]:
    """How far the rollout policy is from the training one: verl's ``kl`` (``E[rollout - old]``,
    KL(rollout || training)), ``k3_kl``, both perplexities (the mean over sequences of
    ``exp(-mean logprob)``), their log difference and ratio, and the chi-square divergences of
    the token and of the sequence ratios."""
    mask = mask.to(old.dtype)
    log_ratio = old - rollout
    train_lp, rollout_lp = row_mean(old, mask), row_mean(rollout, mask)
    diff = rollout_lp - train_lp
    seq_log_ratio = row_sum(log_ratio, mask).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return {
        "training_ppl": float(torch.exp(-train_lp).mean()),
        "training_log_ppl": float((-train_lp).mean()),
        "kl": float(masked_mean(rollout - old, mask)),
        "k3_kl": float(masked_mean(torch.exp(log_ratio) - log_ratio - 1.0, mask)),
        "rollout_ppl": float(torch.exp(-rollout_lp).mean()),
        "rollout_log_ppl": float((-rollout_lp).mean()),
        "log_ppl_diff": float(diff.mean()),
        "log_ppl_abs_diff": float(diff.abs().mean()),
        "log_ppl_diff_max": float(diff.max()),
        "log_ppl_diff_min": float(diff.min()),
        "ppl_ratio": float(torch.exp(diff).mean()),
        "chi2_token": float(masked_mean(_safe_exp(log_ratio).square(), mask)) - 1.0,
        "chi2_seq": float(torch.exp(2.0 * seq_log_ratio).mean()) - 1.0,
    }


# -- together ------------------------------------------------------------------------------------


def correct(
    old: Tensor, rollout: Tensor, mask: Tensor, rc: RolloutCorrectionConfig, *, all_reduce: AllReduce = None
) -> Correction:
    """The importance weights (with ``rc.rollout_is``), the rejection (with ``rc.rollout_rs``)
    and the off-policy figures of a batch: ``old`` the training policy's logprobs, ``rollout``
    the engine's, ``mask`` 1 on response tokens; metrics under ``rollout_corr/``."""
    old, rollout, mask = old.detach(), rollout.detach(), mask.to(old.dtype)
    log_ratio = old - rollout
    metrics: dict[str, float] = {}
    weights = None
    if rc.rollout_is is not None:
        weights, found = importance_weights(
            log_ratio,
            mask,
            rc.rollout_is,
            is_threshold(rc.rollout_is_threshold),
            normalize=rc.rollout_is_batch_normalize,
            all_reduce=all_reduce,
        )
        metrics.update(found)
    keep = mask
    if rc.rollout_rs is not None:
        keep, found = rejection_mask(log_ratio, mask, rs_checks(rc.rollout_rs, rc.rollout_rs_threshold))
        metrics.update(found)
    metrics.update(offpolicy_metrics(old, rollout, mask))
    return Correction(weights, keep, {f"rollout_corr/{k}": v for k, v in metrics.items()})


def weighted(pl: PolicyLoss, weights: Tensor, mask: Tensor, policy_loss: str) -> PolicyLoss:
    """``pl`` with each token's loss times its importance weight; ``geo_mean``'s sequence loss
    takes the geometric mean of its sequence's weights, as verl's does."""
    if policy_loss == "geo_mean":
        mask = mask.to(weights.dtype)
        geo = torch.exp(row_sum(torch.log(weights + 1e-10), mask) / (mask.sum(-1) + 1e-8))
        weights = geo.unsqueeze(-1).expand_as(weights)
    per_token = pl.per_token * weights.detach()
    return replace(pl, per_token=per_token, loss=masked_mean(per_token, mask))


def bypass_policy_loss(
    logp: Tensor, rollout_logp: Tensor, advantages: Tensor, mask: Tensor, al: AlgorithmConfig
) -> tuple[PolicyLoss, dict[str, float]]:
    """verl's ``bypass_mode`` loss: the old logprobs are the engine's (``rollout_logp``), the
    correction is of the current policy ``logp`` against them, per micro-batch, and rejected
    tokens give no loss (the mini-batch's token count still holds them, as verl's does).
    ``loss_type=ppo_clip``: PPO's clipped surrogate on ``r = exp(logp - rollout_logp)``, no
    further weights (the ratio is the correction); ``reinforce``: ``-w A logp`` with the
    importance weights ``w`` (1 without ``rollout_is``)."""
    rc = al.rollout_correction
    fix = correct(logp, rollout_logp, mask, rc)
    if rc.loss_type == "reinforce":
        w = fix.weights if fix.weights is not None else torch.ones_like(logp)
        per_token = -_token_advantages(advantages, logp) * logp * w
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        pl = PolicyLoss(
            loss=masked_mean(per_token, fix.keep),
            per_token=per_token,
            clip_frac=zero,
            clip_frac_lower=zero,
            approx_kl=masked_mean(rollout_logp - logp.detach(), fix.keep),
        )
    else:
        pl = clipped_policy_loss(logp, rollout_logp, advantages, fix.keep, al)
    return replace(pl, per_token=pl.per_token * fix.keep), fix.metrics


def summed_over(ranks: int, group: object, device: str | torch.device) -> AllReduce:
    """An :data:`AllReduce` over ``ranks`` data-parallel ranks of ``group`` on ``device`` (the
    one its backend reduces on); None with one rank."""
    if ranks <= 1:
        return None
    import torch.distributed as dist

    def reduce(values: Tensor) -> Tensor:
        out = values.to(device=device, dtype=torch.float64)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out.to(values)

    return reduce
