"""The one seeding rule of every rollout engine: each sample gets its own seed, derived by a hash.

A rollout call with ``SamplingParams(seed=s, prompt_offset=o)`` draws sample ``j`` of its prompt ``i``
from a random stream seeded with ``sample_seed(s, o + i, j)``, whatever the engine. So every sample of
every prompt is its own draw (copies of one prompt in one call included), a call repeated with the same
seed repeats its samples, and a batch split over workers (each given its slice's ``prompt_offset``)
samples exactly as it would in one call. The trainer seeds step ``t`` of a run with
``step_seed(trainer.seed, t)``, so consecutive steps share no sample seed.

Seeds are BLAKE2b digests of the labelled integers, cut to 63 bits: every engine takes them as a signed
64-bit integer (``torch.Generator.manual_seed``, vLLM's per-request ``seed``). Unlike ``seed + index``
(vLLM's own rule for the ``n`` samples of one request, which gives identical prompts identical samples
and makes the next step reuse all but one seed), distinct inputs give unrelated seeds.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlport.rollout.protocol import SamplingParams

SEED_BITS = 63


def derive_seed(label: str, *parts: int) -> int:
    """A ``SEED_BITS``-bit seed from ``label`` and integers; distinct inputs give unrelated seeds."""
    text = ",".join([label, *(str(int(p)) for p in parts)]).encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"rlport.seed").digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


def step_seed(run_seed: int, step: int) -> int:
    """The seed of training step ``step`` (0-based) of a run seeded with ``run_seed``."""
    return derive_seed("step", run_seed, step)


def sample_seed(call_seed: int, prompt: int, sample: int) -> int:
    """The seed of sample ``sample`` of the prompt at position ``prompt`` of a call seeded ``call_seed``."""
    return derive_seed("sample", call_seed, prompt, sample)


def sample_seeds(params: SamplingParams, n_prompts: int) -> list[list[int]]:
    """Per prompt of a call with ``n_prompts`` prompts, the seeds of its ``params.n`` samples: what an
    engine adapter calls when ``params.seed`` is set (``None`` leaves sampling to the engine's own
    generator, so there are no per-sample seeds to give)."""
    if params.seed is None:
        raise ValueError(
            "sample_seeds needs SamplingParams.seed; with seed=None the engine's generator draws"
        )
    seed, offset = params.seed, params.prompt_offset
    return [[sample_seed(seed, offset + i, j) for j in range(params.n)] for i in range(n_prompts)]
