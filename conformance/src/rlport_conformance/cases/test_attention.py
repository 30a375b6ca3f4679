"""Attention cases: every backend the plugin resolves is held to the flash-attention rule against a
float64 reference; packed input must not leak across sequences; refusals must be typed.

Lengths are odd (97, 77, 13, ...) on purpose, and inputs are seeded per case id, so a run is the same
on every machine.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest

from rlport_conformance import attention_math as am
from rlport_conformance.recorder import CaseContext
from rlport_conformance.status import Status
from rlport_conformance.tolerance import judge

BATCH = 2
SEQ = 97
#: The name the core's reference plugin answers hooks under (``rlport.reference.NAME``).
REFERENCE = "reference"


def _spec(
    rt: Any, f: dict[str, Any], *, varlen: bool = False, window: int | None = None, causal: bool | None = None
):
    from rlport.types import AttentionSpec

    heads, kv = f.get("heads", 4), f.get("kv_heads", 4)
    return AttentionSpec(
        dtype=f["dtype"],
        head_dim=f["head_dim"],
        num_heads=heads,
        num_kv_heads=kv,
        causal=f.get("causal", True) if causal is None else causal,
        varlen=varlen,
        window=window,
        device_type=rt.device.device_type,
    )


def _resolve(rt: Any, case: CaseContext, spec: Any) -> Any:
    """The backend for ``spec``; None (with the refusal recorded) when the plugin refuses it."""
    from rlport.errors import UnsupportedAttention

    try:
        backend = rt.attention_backend(spec)
    except UnsupportedAttention as exc:
        _refused(case, exc)
        return None
    answered = rt.attention_resolutions.get(spec)
    by = answered.plugin if answered else None
    case.metric(backend=getattr(backend, "name", type(backend).__name__), answered_by=by)
    if by == REFERENCE:
        # The plugin deferred (its hook returned None) and the core's reference answered: nothing
        # the reference does is credited to the plugin.
        if case.claimed:
            case.fail(
                "claimed, but the plugin's rlport_attention_backend returned None for this spec and "
                "the reference answered; return a backend (rlport.attention.sdpa.backend_for(spec) to "
                "serve the reference as your own) or drop the claim"
            )
        else:
            case.record(Status.NOT_SUPPORTED, "not claimed, and the plugin deferred it to the reference")
        return None
    return backend


def _refused(case: CaseContext, exc: Any) -> None:
    if case.claimed:
        case.fail(f"claimed, but refused with UnsupportedAttention: {exc.message}")
    else:
        case.unclaimed_result(False, "this configuration", f": {exc.message}")


def _inputs(case: CaseContext, device: str, dtype: Any, b: int, h: int, kv: int, lq: int, lk: int, d: int):
    seed = am.seed_of(case.id)
    q = am.randn((b, h, lq, d), seed=seed, dtype=dtype, device=device)
    k = am.randn((b, kv, lk, d), seed=seed + 1, dtype=dtype, device=device)
    v = am.randn((b, kv, lk, d), seed=seed + 2, dtype=dtype, device=device)
    return q, k, v


def _judge_dense(
    case: CaseContext,
    out: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool,
    window: int | None = None,
    scale: float | None = None,
    mask: Any = None,
) -> Status:
    ref = am.reference(q, k, v, causal=causal, window=window, scale=scale, mask=mask)
    plain = am.plain_error(q, k, v, ref, causal=causal, window=window, scale=scale, mask=mask)
    judgement = judge(am.max_error(out, ref), plain, am.rounding_error(ref, q.dtype))
    case.judge(judgement)
    return judgement.status


def _unchanged(case: CaseContext, before: list[Any], after: list[Any], names: str) -> None:
    import torch

    changed = [
        n
        for n, a, b in zip(names.split(","), before, after, strict=True)
        if not torch.equal(_bits(a), _bits(b))
    ]
    case.check(not changed, f"the backend wrote into its inputs: {', '.join(changed)}")


def _bits(t: Any) -> Any:
    import torch

    return (
        t.detach().contiguous().view(torch.uint8).cpu()
        if t.element_size() == 1
        else (t.detach().contiguous().cpu().view(torch.int16 if t.element_size() == 2 else torch.int32))
    )


def _probe_outcome(case: CaseContext, status: Status, what: str) -> None:
    """An unclaimed capability that gave a correct answer: COMPATIBILITY_WARNING."""
    if not case.claimed and status in (Status.PASS, Status.QUALITY_WARNING):
        case.unclaimed_result(True, what)


@pytest.mark.rlport_case("attention.forward")
def test_forward(case: CaseContext, rt: Any, device: str) -> None:
    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    spec = _spec(rt, f)
    backend = _resolve(rt, case, spec)
    if backend is None:
        return
    q, k, v = _inputs(case, device, dtype, BATCH, f["heads"], f["kv_heads"], SEQ, SEQ, f["head_dim"])
    copies = [t.clone() for t in (q, k, v)]
    try:
        out = backend.forward(q, k, v, causal=f["causal"])
    except Exception as exc:
        if _is_unsupported(exc):
            _refused(case, exc)
            return
        raise
    status = _judge_dense(case, out, q, k, v, causal=f["causal"])
    _unchanged(case, copies, [q, k, v], "q,k,v")
    _probe_outcome(case, status, f"{f['dtype']} head dim {f['head_dim']} ({f['layout']})")


def _is_unsupported(exc: BaseException) -> bool:
    from rlport.errors import UnsupportedAttention

    return isinstance(exc, UnsupportedAttention)


def _call(case: CaseContext, backend: Any, q: Any, k: Any, v: Any, **kwargs: Any) -> Any:
    """``backend.forward`` with a typed refusal recorded (None) instead of raised."""
    try:
        return backend.forward(q, k, v, **kwargs)
    except Exception as exc:
        if _is_unsupported(exc):
            _refused(case, exc)
            return None
        raise


@pytest.mark.rlport_case("attention.decode")
def test_decode(case: CaseContext, rt: Any, device: str) -> None:
    """One query over 1 to thousands of keys (bottom-right aligned: it sees the whole cache), on both
    sides of powers of two, where split-KV kernels change how they split the keys."""
    _causal_chunk(case, rt, device, "causal attention with q_len != k_len")


@pytest.mark.rlport_case("attention.chunked_prefill")
def test_chunked_prefill(case: CaseContext, rt: Any, device: str) -> None:
    """A chunk of queries (1 < q_len < k_len) after a cached prefix: causal bottom-right aligned
    (query i sits at key position i + k_len - q_len), alone and with the sliding window."""
    window = case.facet["window"]
    _causal_chunk(case, rt, device, "chunked prefill" + (f" with sliding window {window}" if window else ""))


def _causal_chunk(case: CaseContext, rt: Any, device: str, what: str) -> None:
    """Causal attention of ``q_len`` queries over ``k_len`` keys (and the facet's window, if any)."""
    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    window = f.get("window")
    backend = _resolve(rt, case, _spec(rt, {**f, "causal": True}, window=window))
    if backend is None:
        return
    q, k, v = _inputs(case, device, dtype, BATCH, 4, 4, f["q_len"], f["k_len"], f["head_dim"])
    out = _call(case, backend, q, k, v, causal=True)
    if out is None:
        return
    status = _judge_dense(case, out, q, k, v, causal=True, window=window)
    _probe_outcome(case, status, what)


@pytest.mark.rlport_case("attention.scale")
def test_scale(case: CaseContext, rt: Any, device: str) -> None:
    """An explicit softmax ``scale`` (not 1/sqrt(head_dim)) is the one applied."""
    _with_parameters(case, rt, device, None)


@pytest.mark.rlport_case("attention.mask")
def test_mask(case: CaseContext, rt: Any, device: str) -> None:
    """Masks as the contract gives them: boolean (True = attend) differing per batch row, with one
    query row that may attend nothing (it must return zeros); additive float masks (finite biases
    and -inf), alone, with causality, and each kind with an explicit scale."""
    kind = case.facet["mask"].split("-")[0]
    out = _with_parameters(case, rt, device, kind)
    if out is not None and kind == "bool":
        b, row = am.EMPTY_ROW
        empty = out[b, :, row].detach().double().abs().max().item()
        case.check(
            empty == 0.0,
            f"batch {b} query {row} may attend no key (its mask row is all False) but got values up to "
            f"{empty:.3g}; such a row must return zeros",
            fully_masked_row_max=empty,
        )


def _with_parameters(case: CaseContext, rt: Any, device: str, mask_kind: str | None) -> Any:
    """Dense attention with the facet's ``causal`` and ``scale`` and a mask of ``mask_kind`` (see
    :func:`attention_math.make_mask`), judged; the output, or None when it was refused."""
    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    backend = _resolve(rt, case, _spec(rt, f))
    if backend is None:
        return None
    q, k, v = _inputs(case, device, dtype, BATCH, 4, 4, SEQ, SEQ, f["head_dim"])
    mask = None
    if mask_kind is not None:
        mask = am.make_mask(mask_kind, BATCH, SEQ, SEQ, seed=am.seed_of(case.id) + 3, dtype=dtype).to(device)
    out = _call(case, backend, q, k, v, causal=f["causal"], scale=f["scale"], mask=mask)
    if out is not None:
        _judge_dense(case, out, q, k, v, causal=f["causal"], scale=f["scale"], mask=mask)
    return out


def _packed(
    case: CaseContext,
    device: str,
    dtype: Any,
    q_lengths: list[int],
    k_lengths: list[int],
    h: int,
    kv: int,
    d: int,
    pad: int,
):
    """Packed q (``q_lengths``) and k/v (``k_lengths``), each with ``pad`` trailing rows of NaN (which
    no valid token may read), and their int32 cumulative lengths."""
    import torch

    seed = am.seed_of(case.id)
    total_q, total_k = sum(q_lengths), sum(k_lengths)
    q = am.randn((total_q + pad, h, d), seed=seed, dtype=dtype, device=device)
    k = am.randn((total_k + pad, kv, d), seed=seed + 1, dtype=dtype, device=device)
    v = am.randn((total_k + pad, kv, d), seed=seed + 2, dtype=dtype, device=device)
    q[total_q:] = float("nan")
    k[total_k:] = float("nan")
    v[total_k:] = float("nan")

    def cu(lengths: list[int]) -> Any:
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)

    return q, k, v, cu(q_lengths), cu(k_lengths)


VARLEN_LENGTHS = [5, 17, 1, 33, 9]
#: ``attention.varlen_qk``: per sequence fewer (or as many) queries than keys, as in chunked prefill
#: of packed requests; causal is bottom-right aligned per sequence.
VARLEN_Q_LENGTHS = [1, 5, 3, 17, 2]
VARLEN_K_LENGTHS = [9, 5, 40, 33, 7]
VARLEN_PAD = 3


@pytest.mark.rlport_case("attention.varlen")
def test_varlen(case: CaseContext, rt: Any, device: str) -> None:
    """Packed sequences: each matches its own dense reference, perturbing one sequence changes no
    other, trailing rows past ``cu_seqlens[-1]`` are zero, and the inputs are not written."""
    _varlen(case, rt, device, VARLEN_LENGTHS, VARLEN_LENGTHS)


@pytest.mark.rlport_case("attention.varlen_qk")
def test_varlen_qk(case: CaseContext, rt: Any, device: str) -> None:
    """As ``attention.varlen``, with ``cu_seqlens_q != cu_seqlens_k`` (each sequence has its own query
    and key lengths)."""
    _varlen(case, rt, device, VARLEN_Q_LENGTHS, VARLEN_K_LENGTHS)


def _varlen(case: CaseContext, rt: Any, device: str, q_lengths: list[int], k_lengths: list[int]) -> None:
    import torch

    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    heads, kv = (4, 2) if f["layout"] == "gqa" else (4, 4)
    spec = _spec(rt, {**f, "heads": heads, "kv_heads": kv}, varlen=True)
    backend = _resolve(rt, case, spec)
    if backend is None:
        return
    d, causal = f["head_dim"], f["causal"]
    q, k, v, cu_q, cu_k = _packed(case, device, dtype, q_lengths, k_lengths, heads, kv, d, VARLEN_PAD)
    copies = [t.clone() for t in (q, k, v, cu_q, cu_k)]

    def run(q: Any, k: Any, v: Any) -> Any:
        return backend.forward_varlen(
            q,
            k,
            v,
            cu_seqlens_q=cu_q,
            cu_seqlens_k=cu_k,
            max_seqlen_q=max(q_lengths),
            max_seqlen_k=max(k_lengths),
            causal=causal,
        )

    try:
        out = run(q, k, v)
    except Exception as exc:
        if _is_unsupported(exc):
            _refused(case, exc)
            return
        raise
    total = sum(q_lengths)
    if tuple(out.shape) != tuple(q.shape):
        case.fail(f"forward_varlen returned shape {tuple(out.shape)}, expected {tuple(q.shape)}")
        return
    # Per-sequence references.
    errors, plain_errors, rounding = [], [], []
    starts_q, starts_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(q_lengths)):
        qs, qe, ks, ke = starts_q[i], starts_q[i + 1], starts_k[i], starts_k[i + 1]
        qi = q[qs:qe].transpose(0, 1)[None]
        ki, vi = (t[ks:ke].transpose(0, 1)[None] for t in (k, v))
        ref = am.reference(qi, ki, vi, causal=causal)
        errors.append(am.max_error(out[qs:qe].transpose(0, 1)[None], ref))
        plain_errors.append(am.plain_error(qi, ki, vi, ref, causal=causal))
        rounding.append(am.rounding_error(ref, dtype))
    judgement = judge(max(errors), max(plain_errors), max(rounding))
    case.judge(judgement)
    worst_seq = max(range(len(q_lengths)), key=errors.__getitem__)
    if judgement.status is Status.FAIL:
        case.metric(worst_sequence=worst_seq, worst_sequence_error=errors[worst_seq])
    # Rows past the last sequence: exactly zero.
    tail = out[total:]
    case.check(
        bool(torch.all(tail == 0)),
        f"rows past cu_seqlens_q[-1]={total} are not zero (written outside valid tokens)",
    )
    _unchanged(case, copies, [q, k, v, cu_q, cu_k], "q,k,v,cu_seqlens_q,cu_seqlens_k")
    # Leakage: change sequence 3 (the longest); no other sequence's output may change at all.
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t, starts in ((q2, starts_q), (k2, starts_k), (v2, starts_k)):
        t[starts[3] : starts[4]] = t[starts[3] : starts[4]] * -2 + 1
    out2 = run(q2, k2, v2)
    others = torch.ones(total, dtype=torch.bool)
    others[starts_q[3] : starts_q[4]] = False
    leak = float(
        (out2[:total][others.to(out2.device)].double() - out[:total][others.to(out.device)].double())
        .abs()
        .max()
    )
    case.check(
        leak == 0.0,
        f"changing sequence 3 changed other sequences' outputs by up to {leak:.3g} "
        "(attention crosses sequence boundaries)",
        leak=leak,
    )
    _probe_outcome(case, judgement.status, "packed variable-length attention")


@pytest.mark.rlport_case("attention.window")
def test_window(case: CaseContext, rt: Any, device: str) -> None:
    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    backend = _resolve(rt, case, _spec(rt, {**f, "causal": True}, window=f["window"]))
    if backend is None:
        return
    q, k, v = _inputs(case, device, dtype, BATCH, 4, 4, SEQ, SEQ, f["head_dim"])
    try:
        out = backend.forward(q, k, v, causal=True)
    except Exception as exc:
        if _is_unsupported(exc):
            _refused(case, exc)
            return
        raise
    status = _judge_dense(case, out, q, k, v, causal=True, window=f["window"])
    _probe_outcome(case, status, f"sliding window {f['window']}")


@pytest.mark.rlport_case("attention.determinism")
def test_determinism(case: CaseContext, rt: Any, device: str) -> None:
    """Repeated calls, also on copies of the inputs in fresh memory, give the same bits."""
    import torch

    f = case.facet
    dtype = am.DTYPES[f["dtype"]]
    backend = _resolve(rt, case, _spec(rt, {**f, "causal": True, "heads": 4, "kv_heads": 2}))
    if backend is None:
        return
    q, k, v = _inputs(case, device, dtype, BATCH, 4, 2, SEQ, SEQ, f["head_dim"])
    first = backend.forward(q, k, v, causal=True)
    runs = [backend.forward(q, k, v, causal=True) for _ in range(2)]
    runs.append(backend.forward(q.clone(), k.clone(), v.clone(), causal=True))
    same = all(torch.equal(_bits(first), _bits(r)) for r in runs)
    if case.claimed:
        case.check(same, "claimed deterministic, but repeated calls gave different bits")
    elif same:
        case.unclaimed_result(True, "bitwise determinism")
    else:
        case.record(Status.NOT_SUPPORTED, "not deterministic (not claimed)")


@pytest.mark.rlport_case("attention.unsupported")
def test_unsupported(case: CaseContext, rt: Any, device: str) -> None:
    """Six query heads over four kv heads cannot be grouped: the answer must be UnsupportedAttention,
    at resolution or at the call, never a tensor."""
    import torch

    from rlport.errors import UnsupportedAttention
    from rlport.types import AttentionSpec

    spec = AttentionSpec(
        dtype="float32",
        head_dim=64,
        num_heads=6,
        num_kv_heads=4,
        causal=True,
        device_type=rt.device.device_type,
    )
    try:
        backend = rt.attention_backend(spec)
        q, k, v = _inputs(case, device, torch.float32, 1, 6, 4, 17, 17, 64)
        out = backend.forward(q, k, v, causal=True)
    except UnsupportedAttention as exc:
        case.passed(None, refusal=exc.message)
        return
    except Exception as exc:
        case.fail(f"raised {type(exc).__name__}: {exc} instead of rlport.errors.UnsupportedAttention")
        return
    case.fail(
        f"returned a tensor of shape {tuple(out.shape)} for 6 query heads over 4 kv heads instead of "
        "raising rlport.errors.UnsupportedAttention"
    )


# -- transformers integration -----------------------------------------------------------------------

_REFERENCE_IMPL = "rlport_conformance_reference"


def _reference_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function computing the float64 reference (rows with no key: zeros)."""
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    causal = attention_mask is None and query.shape[2] > 1 and bool(is_causal)
    out = am.reference(query, key, value, causal=causal, scale=scaling, mask=attention_mask)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


@pytest.fixture(scope="module")
def tiny_qwen2() -> Any:
    import torch
    from transformers import AttentionInterface, AttentionMaskInterface, Qwen2ForCausalLM
    from transformers.masking_utils import sdpa_mask

    from rlport_conformance.patch_equivalence import tiny_config

    AttentionInterface.register(_REFERENCE_IMPL, _reference_attention)
    AttentionMaskInterface.register(_REFERENCE_IMPL, sdpa_mask)
    config = tiny_config("qwen2", hidden_size=128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = Qwen2ForCausalLM(config).eval()
        ids = torch.randint(3, 101, (2, 37))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in the second row
    return model, ids, mask


@pytest.mark.rlport_case("attention.transformers")
def test_transformers(case: CaseContext, rt: Any, device: str, tiny_qwen2: Any) -> None:
    """A tiny Qwen2 (GQA, padded batch) gives the reference's logits through attn_implementation="rlport"."""
    import copy

    import torch

    from rlport.attention import transformers_integration as ti

    model, ids, mask = tiny_qwen2
    dtype = am.DTYPES[case.facet["dtype"]]
    name = ti.register(rt)
    ti.reset()
    valid = mask.bool()

    def logits(m: Any, impl: str, dev: str) -> Any:
        m.set_attn_implementation(impl)
        with torch.no_grad():
            return m(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.cpu()

    ref = logits(copy.deepcopy(model).to(torch.float64), _REFERENCE_IMPL, "cpu").double()
    lowp = copy.deepcopy(model).to(device=device, dtype=dtype)
    plain = logits(lowp, "eager", device)
    out = logits(lowp, name, device)
    used = [key for key in ti.resolved() if key[0] == dtype]
    if not used:
        case.fail(f"attn_implementation={name!r} never resolved a backend for {dtype}")
        return
    judgement = judge(
        am.max_error(out[valid], ref[valid]),
        am.max_error(plain[valid], ref[valid]),
        am.rounding_error(ref[valid], dtype),
    )
    case.judge(judgement)
    case.metric(resolved_calls=len(used))


# -- performance --------------------------------------------------------------------------------------


@pytest.mark.rlport_perf
def test_attention_tflops(conformance: Any, rt: Any, device: str, perf: Any) -> None:
    """Forward TFLOP/s (flash-attention's FLOP count) per claimed dtype, causal and not; median of 5."""
    from rlport.types import AttentionSpec
    from rlport_conformance.plan import claimed_head_dims

    dims = claimed_head_dims(conformance.declared) or [64]
    head_dim = 128 if 128 in dims else dims[0]
    b, h, s = 1, 8, 1024
    for name in conformance.declared.get("dtypes", []):
        dtype = am.DTYPES.get(name)
        if dtype is None:
            continue
        for causal in (True, False):
            spec = AttentionSpec(
                dtype=name,
                head_dim=head_dim,
                num_heads=h,
                num_kv_heads=h,
                causal=causal,
                device_type=rt.device.device_type,
            )
            backend = rt.attention_backend(spec)
            q, k, v = (am.randn((b, h, s, head_dim), seed=i, dtype=dtype, device=device) for i in range(3))
            backend.forward(q, k, v, causal=causal)  # warm-up
            times = []
            for _ in range(5):
                _sync(device)
                t0 = time.perf_counter()
                backend.forward(q, k, v, causal=causal)
                _sync(device)
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            tflops = am.flops(b, h, s, s, head_dim, causal=causal) / median / 1e12
            perf.record(
                f"attention.forward[{name}-d{head_dim}-{'causal' if causal else 'full'}-b{b}h{h}s{s}]",
                tflops,
                "TFLOP/s",
                "tflops",
                5,
                seconds=median,
            )


def _sync(device: str) -> None:
    import torch

    kind = torch.device(device).type
    if kind != "cpu":
        module = getattr(torch, kind, None)
        if module is not None and hasattr(module, "synchronize"):
            module.synchronize()
