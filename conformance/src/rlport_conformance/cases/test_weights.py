"""Weight-transport cases: the transport ``rlport_weight_transport`` answers delivers every named
tensor of a model, bit for bit, to an engine in this process (``update_weights``) and to one in
another process (``receive_weights(unpack, payload)``, received by a spawned process as an engine's
worker would).

The model (:func:`model`) is larger than one bucket (the case sets the transport's
``bucket_bytes``, a protocol attribute, to :data:`BUCKET_BYTES`), has tied embeddings (one tensor
under two names), float32, bfloat16 and float16 tensors, a tensor larger than a bucket, a
non-contiguous one and a 0-dim one; it is sent :data:`SYNCS` times, changed in place between syncs.
Each received tensor is compared by dtype, shape and the sha256 of its bytes; every name arrives
once per sync; buckets stay within the bound (a group the engine loads together, such as one
attention block's projections, is never split).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest

from rlport_conformance.recorder import CaseContext

BUCKET_BYTES = (1 << 20) + 64
SYNCS = 3
RECEIVER_TIMEOUT_S = 120.0


def model(device: str) -> list[tuple[str, Any]]:
    """The named tensors of a small model, about 6 MiB, in the order a model's ``named_parameters``
    gives them (tied ``lm_head.weight`` last, the same tensor as the embedding)."""
    import torch

    gen = torch.Generator().manual_seed(11)

    def t(*shape: int, dtype: Any = torch.float32) -> Any:
        return torch.randn(shape, generator=gen).to(dtype).to(device)

    embed = t(1000, 64)
    named = [("model.embed_tokens.weight", embed)]
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    for i in range(4):
        dt = dtypes[i % 3]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            named.append((f"model.layers.{i}.self_attn.{proj}.weight", t(128, 128, dtype=dt)))
        rows = 2100 if i == 2 else 96  # layer 2 MLP: each tensor larger than a bucket
        for proj in ("gate_proj", "up_proj", "down_proj"):
            named.append((f"model.layers.{i}.mlp.{proj}.weight", t(rows, 257, dtype=dt)))
        named.append((f"model.layers.{i}.input_layernorm.weight", t(64, dtype=dt)))
    named.append(("model.layers.1.self_attn.rotary.scale", t(dtype=torch.float32).reshape(())))
    named.append(("model.layers.3.self_attn.transposed.weight", t(96, 80).t()))  # non-contiguous
    named.append(("model.norm.weight", t(64)))
    named.append(("lm_head.weight", embed))  # tied: the same tensor under a second name
    return named


def digest(tensor: Any) -> tuple[str, tuple[int, ...], str]:
    """(dtype, shape, sha256 of the bytes) of a tensor, wherever it lives."""
    import torch

    host = tensor.detach().to("cpu").contiguous()
    raw = host.reshape(-1).view(torch.uint8) if host.numel() else host.reshape(-1)
    return (
        str(host.dtype).removeprefix("torch."),
        tuple(host.shape),
        hashlib.sha256(raw.numpy().tobytes()).hexdigest(),
    )


class Recorder:
    """An engine in this process: records what each ``update_weights`` call (one bucket) holds."""

    def __init__(self) -> None:
        self.buckets: list[list[tuple[str, tuple[str, tuple[int, ...], str], int]]] = []

    def update_weights(self, named_tensors: Any) -> None:
        self.buckets.append(
            [(n, digest(t), int(t.numel()) * int(t.element_size())) for n, t in named_tensors]
        )


class Remote:
    """An engine whose model lives in another process: ``receive_weights`` hands ``(unpack,
    payload)`` to a spawned process that resolves ``unpack``, loads the pairs and replies with what
    it received (the sender may free the payload when this returns)."""

    def __init__(self) -> None:
        import multiprocessing

        from rlport_conformance import transport_receiver

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=transport_receiver.main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.buckets: list[list[tuple[str, tuple[str, tuple[int, ...], str], int]]] = []

    def receive_weights(self, unpack: str, payload: Any) -> None:
        self.conn.send((unpack, payload))
        if not self.conn.poll(RECEIVER_TIMEOUT_S):
            raise TimeoutError(f"the receiving process did not answer within {RECEIVER_TIMEOUT_S:g} s")
        answer = self.conn.recv()
        if isinstance(answer, str):
            raise RuntimeError(f"the receiving process failed: {answer}")
        self.buckets.append(answer)  # pickled tuples stay tuples: comparable with digest()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def _check_sync(
    case: CaseContext, sync: int, sent: list[tuple[str, Any]], buckets: list[Any], limit: int
) -> bool:
    from rlport.rollout.transport import group_key

    expected = {n: digest(t) for n, t in sent}
    got: dict[str, Any] = {}
    duplicates = []
    for bucket in buckets:
        for name, d, _size in bucket:
            if name in got:
                duplicates.append(name)
            got[name] = d
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    wrong = [n for n in expected if n in got and got[n] != expected[n]]
    ok = case.check(not missing, f"sync {sync}: {len(missing)} tensors never arrived: {missing[:4]}")
    ok &= case.check(not duplicates, f"sync {sync}: tensors arrived twice: {duplicates[:4]}")
    ok &= case.check(not extra, f"sync {sync}: unknown names arrived: {extra[:4]}")
    detail = [
        f"{n}: sent {expected[n][:2]} got {got[n][:2]}"
        + (" (bytes differ)" if expected[n][:2] == got[n][:2] else "")
        for n in wrong[:3]
    ]
    ok &= case.check(
        not wrong, f"sync {sync}: {len(wrong)} tensors differ from what was sent: {'; '.join(detail)}"
    )
    # Buckets: within the bound unless one group alone; no run of one group split across buckets.
    where = {name: index for index, bucket in enumerate(buckets) for name, _d, _s in bucket}
    runs: list[list[str]] = []
    for name, _t in sent:
        if runs and group_key(runs[-1][-1]) == group_key(name):
            runs[-1].append(name)
        else:
            runs.append([name])
    split = [run[0] for run in runs if len({where.get(n) for n in run}) > 1]
    ok &= case.check(not split, f"sync {sync}: groups split across buckets, from: {split[:4]}")
    for index, bucket in enumerate(buckets):
        size = sum(s for _n, _d, s in bucket)
        groups = {group_key(n) for n, _d, _s in bucket}
        ok &= case.check(
            size <= limit or len(groups) == 1,
            f"sync {sync}: bucket {index} holds {size} bytes of {len(groups)} groups (bound {limit})",
        )
    return ok


@pytest.mark.rlport_case("weights.transport")
def test_transport(case: CaseContext, rt: Any, device: str) -> None:
    import torch

    from rlport.types import EnginePlacement

    f = case.facet
    placement = EnginePlacement(same_process=f["same_process"], same_device=True)
    transport = rt.weight_transport(f["engine"], placement)
    answered = rt._transports.get((f["engine"], placement)) if hasattr(rt, "_transports") else None
    case.metric(
        transport=getattr(transport, "name", type(transport).__name__),
        answered_by=getattr(answered, "plugin", None),
    )
    saved = transport.bucket_bytes
    transport.bucket_bytes = BUCKET_BYTES
    engine = Recorder() if f["same_process"] else Remote()
    named = model(device)
    try:
        for sync in range(SYNCS):
            engine.buckets = []
            transport.send(engine, iter(named))
            if not _check_sync(case, sync, named, engine.buckets, BUCKET_BYTES):
                return
            case.metric(buckets=len(engine.buckets))
            with torch.no_grad():  # the next step's weights (the tied tensor once, through one name)
                for name, t in named:
                    if name != "lm_head.weight":
                        t.mul_(-1).add_(0.5 if t.is_floating_point() else 1)
    finally:
        transport.bucket_bytes = saved
        if isinstance(engine, Remote):
            engine.close()
