"""One rollout as the models train on it, with the shape of every field.

A step's rollouts travel as :class:`Sample` lists, one list per worker (its share of the prompts, each
prompt's ``rollout.n`` answers in order). The driver builds them from the engine's answers
(:func:`Sample.answered`); the worker's ``prepare`` keeps them, computes what the advantages need
(logprobs, the critic's values, the KL against the reference) and returns that as tensors; the driver
computes the advantages (and, with a critic, the returns) and hands each worker back only those
(:func:`attach`), so the token ids cross the process boundary once per step.

Shapes below: ``P`` the prompt's length, ``R`` the response's length (its tokens after the prompt, up
to ``rollout.max_new_tokens``). Every per-token tensor is float32 on the host, one row per sample;
:func:`rlport.train.algos.masked.pad_rows` pads a list of them to a ``(batch, max R)`` matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Sample", "attach"]


@dataclass
class Sample:
    """One rollout: a prompt, the engine's answer, and what training needs per response token."""

    #: ``(P,)`` the prompt's token ids, as the engine received them
    prompt_ids: list[int]
    #: ``(R,)`` the answer's token ids
    response_ids: list[int]
    #: ``(R,)`` the engine's logprob of each answer token (temperature 1), compared with the actor's
    engine_logprobs: list[float]
    #: ``(R,)`` the advantage of each answer token. A per-sequence estimator (GRPO, RLOO, ...) puts
    #: its one value on every token; ``None`` until the driver has computed the step's advantages.
    advantages: torch.Tensor | None = None
    #: ``(R,)`` the critic's value targets (``algorithm.adv_estimator=gae`` only, else ``None``)
    returns: torch.Tensor | None = None

    @classmethod
    def scored(
        cls,
        prompt_ids: list[int],
        response_ids: list[int],
        engine_logprobs: list[float],
        advantage: float,
        returns: Sequence[float] | None = None,
    ) -> Sample:
        """A sample whose sequence has one ``advantage`` (on each of its tokens)."""
        n = len(response_ids)
        return cls(
            prompt_ids,
            response_ids,
            engine_logprobs,
            advantages=torch.full((n,), float(advantage), dtype=torch.float32),
            returns=None if returns is None else torch.as_tensor(returns, dtype=torch.float32),
        )


def attach(
    samples: Sequence[Sample],
    advantages: Sequence[torch.Tensor],
    returns: Sequence[torch.Tensor] | None = None,
) -> None:
    """Give each sample its ``(R,)`` advantages (and returns), checking each row's length."""
    rets: Sequence[torch.Tensor | None] = returns if returns is not None else [None] * len(samples)
    for s, a, r in zip(samples, advantages, rets, strict=True):
        if a.shape != (len(s.response_ids),):
            raise ValueError(
                f"advantages of shape {tuple(a.shape)} for a response of {len(s.response_ids)} tokens"
            )
        s.advantages = a.to(torch.float32)
        s.returns = None if r is None else r.to(torch.float32)
