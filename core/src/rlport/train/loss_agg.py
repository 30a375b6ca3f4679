"""How a mini-batch's per-token losses become the one number its update descends: verl's
``loss_agg_mode`` (``algorithm.loss_agg_mode`` for the actor, ``critic.loss_agg_mode``).

- ``token-mean``: the mean over every response token of the mini-batch (long answers weigh more);
- ``seq-mean-token-mean``: each sequence's token mean, then the mean over sequences;
- ``seq-mean-token-sum``: each sequence's token sum, then the mean over sequences;
- ``seq-mean-token-sum-norm``: as ``seq-mean-token-sum``, divided by a constant (Dr. GRPO's
  unbiased form; ``algorithm.loss_scale_factor``, else ``rollout.max_new_tokens``).

A mini-batch goes through forward and backward in micro-batches; :func:`micro_share` gives one
micro-batch's part, and the parts of a mini-batch add up to the mode's loss of the whole
mini-batch, however it is cut (by count or by token budget). Sequences without response tokens do
not count, as in verl.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MiniBatchSize:
    """What the mode divides by: the mini-batch's response tokens and its sequences that have any."""

    tokens: int
    sequences: int

    @classmethod
    def of(cls, response_lengths: list[int]) -> MiniBatchSize:
        return cls(tokens=sum(response_lengths), sequences=sum(1 for n in response_lengths if n > 0))


def micro_share(
    per_token: torch.Tensor, mask: torch.Tensor, mode: str, whole: MiniBatchSize, *, norm: float = 1.0
) -> torch.Tensor:
    """The part of the mini-batch loss (``mode`` over ``whole``) that the micro-batch
    ``per_token`` (``(rows, width)``, ``mask`` 1 on response tokens) contributes; ``norm`` is
    ``seq-mean-token-sum-norm``'s divisor."""
    mask = mask.to(per_token.dtype)
    token_sums = (per_token * mask).sum(-1)
    if mode == "token-mean":
        return token_sums.sum() / max(1, whole.tokens)
    if mode == "seq-mean-token-mean":
        counts = mask.sum(-1)
        means = torch.where(counts > 0, token_sums / counts.clamp_min(1.0), torch.zeros_like(token_sums))
        return means.sum() / max(1, whole.sequences)
    if mode == "seq-mean-token-sum":
        return token_sums.sum() / max(1, whole.sequences)
    if mode == "seq-mean-token-sum-norm":
        return token_sums.sum() / (max(1, whole.sequences) * norm)
    raise ValueError(
        f"loss_agg_mode {mode!r} is not one of token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm"
    )
