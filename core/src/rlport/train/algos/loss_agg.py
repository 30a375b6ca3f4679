"""How a mini-batch's per-token losses become the one number its update descends: verl's
``loss_agg_mode`` (``algorithm.loss_agg_mode`` for the actor, ``critic.loss_agg_mode``).

- ``token-mean``: the mean over every response token of the mini-batch (long answers weigh more);
- ``token-sum``: the sum over every response token of the mini-batch;
- ``seq-mean-token-mean``: each sequence's token mean, then the mean over sequences;
- ``seq-mean-token-sum``: each sequence's token sum, then the mean over sequences;
- ``seq-mean-token-sum-norm``: as ``seq-mean-token-sum``, divided by a constant (Dr. GRPO's
  unbiased form; ``algorithm.loss_scale_factor``, else ``rollout.max_new_tokens``).

The mini-batch is the global one: every data-parallel rank's part of it. A mini-batch goes
through forward and backward in micro-batches on each rank; :func:`micro_share` gives one
micro-batch's part, divided by the token or sequence count of the whole global mini-batch
(:func:`global_sizes`, one all-reduce) and multiplied by the number of ranks, because the training
strategy averages the ranks' gradients: the averaged gradient is then the gradient of the mode's
loss of the global mini-batch, however the ranks' token and sequence counts differ and however
each rank cuts its part (by count or by token budget). This is verl's ``agg_loss`` with
``dp_size``, ``batch_num_tokens`` and ``global_batch_size``. Sequences without response tokens do
not count, as in verl's ``agg_loss`` without ``global_batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlport.train.config.choices import LOSS_AGG_MODES


@dataclass(frozen=True)
class MiniBatchSize:
    """What the mode divides by: the mini-batch's response tokens and its sequences that have any,
    over all ``ranks`` data-parallel ranks (whose gradients the strategy averages)."""

    tokens: int
    sequences: int
    ranks: int = 1

    @classmethod
    def of(cls, response_lengths: list[int], loss_tokens: list[int] | None = None) -> MiniBatchSize:
        """The size of a mini-batch held whole by one rank; ``loss_tokens`` (per sequence, the
        tokens left in the loss by rollout correction's rejection) replace the lengths in the
        token count, as verl counts the rejection-masked tokens, while its sequences all count."""
        tokens = sum(response_lengths if loss_tokens is None else loss_tokens)
        return cls(tokens=tokens, sequences=sum(1 for n in response_lengths if n > 0))


def global_sizes(
    mini_batches: list[list[int]],
    *,
    ranks: int,
    group: Any = None,
    device: str | torch.device = "cpu",  # the counts' all-reduce device: callers pass the model's
    loss_tokens: list[list[int]] | None = None,
) -> list[MiniBatchSize]:
    """The global size of each mini-batch, given this rank's part of each (its response lengths,
    and ``loss_tokens`` as :meth:`MiniBatchSize.of` takes them): the counts summed over the
    ``ranks`` ranks of ``group`` (``None``: the default process group) in one all-reduce, on
    ``device`` (the one the group's backend reduces gradients on). Every rank must call it with
    as many mini-batches, in the same order; with one rank nothing is reduced."""
    kept = loss_tokens if loss_tokens is not None else [None] * len(mini_batches)
    local = [MiniBatchSize.of(lengths, k) for lengths, k in zip(mini_batches, kept, strict=True)]
    if ranks == 1 or not local:
        return local
    import torch.distributed as dist

    counts = torch.tensor([[m.tokens, m.sequences] for m in local], dtype=torch.int64, device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
    return [MiniBatchSize(tokens, sequences, ranks) for tokens, sequences in counts.tolist()]


def micro_share(
    per_token: torch.Tensor, mask: torch.Tensor, mode: str, whole: MiniBatchSize, *, norm: float = 1.0
) -> torch.Tensor:
    """The part of the global mini-batch loss (``mode`` over ``whole``) that the micro-batch
    ``per_token`` (``(rows, width)``, ``mask`` 1 on response tokens) contributes, times
    ``whole.ranks`` (the strategy averages the ranks' gradients); ``norm`` is
    ``seq-mean-token-sum-norm``'s divisor."""
    mask = mask.to(per_token.dtype)
    token_sums = (per_token * mask).sum(-1)
    if mode == "token-mean":
        return token_sums.sum() * whole.ranks / max(1, whole.tokens)
    if mode == "token-sum":
        return token_sums.sum() * whole.ranks
    if mode == "seq-mean-token-mean":
        counts = mask.sum(-1)
        means = torch.where(counts > 0, token_sums / counts.clamp_min(1.0), torch.zeros_like(token_sums))
        return means.sum() * whole.ranks / max(1, whole.sequences)
    if mode == "seq-mean-token-sum":
        return token_sums.sum() * whole.ranks / max(1, whole.sequences)
    if mode == "seq-mean-token-sum-norm":
        return token_sums.sum() * whole.ranks / (max(1, whole.sequences) * norm)
    raise ValueError(f"loss_agg_mode {mode!r} is not one of {', '.join(LOSS_AGG_MODES)}")
