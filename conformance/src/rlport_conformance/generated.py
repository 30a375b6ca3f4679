"""Generated attention inputs: Hypothesis strategies over the regimes a plugin claims, and the checks
that hold one generated example to the float64 reference under the suite's tolerance rule.

A case (``attention.generated[<dtype>-<regime>]``, ``attention.gradient[<dtype>-<regime>]``) runs a
fixed number of examples drawn by Hypothesis with ``derandomize=True``, no example database and the
seed :func:`seed_of` its case id: the same examples in the same order on every machine and run.
The first failing example ends the generation; Hypothesis then shrinks it, within a budget
(:data:`SHRINK_CALLS` kernel calls, :data:`SHRINK_SECONDS`; a passing case never shrinks, so it costs
no more), to the smallest example it finds that fails the same way. Both go into the report whole
(``metrics.example``, beside its index and the seed, and ``metrics.shrunk_example``), so a vendor
replays either one with :func:`replay` (or the whole case with ``-k '<case id>'``). An explicit
example (the regime's extremes, run first) that fails is reported as it is: it has nothing to
shrink from.

An example is a plain JSON dict (shapes, flags, scale, magnitude, layouts, and a ``data`` seed from
which the tensors are drawn), so it is the complete description of the inputs.

Regimes (forward): ``dense`` (shapes, head dims in the claimed set or range, GQA ratios when claimed,
causal or full, ``q_len != k_len``, an explicit scale or none), ``mask`` (boolean and additive float
masks at every broadcast shape, from per-key padding masks to per-head ones, random densities,
fully masked rows, which must return exact zeros), ``magnitude`` (scaled scores up to what the dtype
holds, where a softmax without max subtraction overflows), ``strided`` (non-contiguous q/k/v: the
``(B, L, H, D)`` layout transposed, every other element, broadcast batch), ``decode`` (one query over
up to 32,769 keys, on both sides of powers of two), ``chunked`` (causal chunks after a cached
prefix, with the window when claimed) and ``varlen`` (random packed lengths, empty sequences
included). Gradients: dQ, dK and dV of ``dense``, ``mask``, ``gqa``, ``window`` and ``varlen``
against float64 autograd, with the tolerance rule's gradient factor.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlport_conformance import attention_math as am
from rlport_conformance.status import Status
from rlport_conformance.tolerance import GRADIENT_K, Judgement, judge

#: Forward regimes, and how many examples each runs (decode examples are long: fewer).
FORWARD_REGIMES = {
    "dense": 14,
    "mask": 14,
    "magnitude": 10,
    "strided": 10,
    "decode": 6,
    "chunked": 8,
    "varlen": 8,
}
#: Gradient regimes and their example counts.
GRADIENT_REGIMES = {"dense": 6, "mask": 6, "gqa": 5, "window": 5, "varlen": 5}
#: The longest decode cache (past 2**15, the largest split-KV switch the suite looks for).
MAX_DECODE_KEYS = 32769
#: Scaled scores reach up to this (a naive ``exp`` overflows past 88 in float32 and bfloat16 and
#: past 11 in float16); bounded below what the dtype holds once the unscaled dot product is formed.
MAX_SCORE = 2.0e4


@dataclass
class Outcome:
    """What a generated case found: the worst judgement, the failing example if any, and counts."""

    status: Status = Status.PASS
    message: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    examples: int = 0
    failing: dict[str, Any] | None = None
    index: int | None = None


class Refused(Exception):
    """The plugin refused a claimed spec or call (its message says how)."""


def seed_of(case_id: str) -> int:
    return am.seed_of(case_id)


# -- strategies -------------------------------------------------------------------------------------


def _head_dim(st: Any, facet: Mapping[str, Any]) -> Any:
    dims = list(facet.get("head_dims") or ())
    options = [st.sampled_from(sorted(dims))] if dims else []
    for lo, hi, m in facet.get("head_dim_ranges") or ():
        first, last = -(-lo // m), hi // m
        options.append(st.integers(first, last).map(lambda n, m=m: n * m))
    return st.one_of(options) if options else st.just(64)


def _layout(st: Any, facet: Mapping[str, Any], force_gqa: bool = False) -> Any:
    if facet.get("gqa") or force_gqa:
        low = 2 if force_gqa else 1
        return st.tuples(st.sampled_from((1, 2, 4)), st.integers(low, 4)).map(lambda t: (t[0] * t[1], t[0]))
    return st.integers(1, 4).map(lambda h: (h, h))


def _scale(st: Any) -> Any:
    return st.one_of(st.none(), st.floats(0.02, 2.0, allow_nan=False))


def strategy(regime: str, facet: Mapping[str, Any], *, gradient: bool = False) -> Any:
    """The Hypothesis strategy of ``regime`` for a case with ``facet`` (the claims it may use)."""
    from hypothesis import strategies as st

    causal_ok = bool(facet.get("causal", True))
    window_ok = bool(facet.get("window"))
    causal = st.booleans() if causal_ok else st.just(False)
    longest = 48 if gradient else 160
    common = {
        "data": st.integers(0, 2**31 - 1),
        "head_dim": _head_dim(st, facet),
        "layout": _layout(st, facet, force_gqa=regime == "gqa"),
        "scale": _scale(st),
    }

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        ex: dict[str, Any] = {"regime": regime}
        ex["data"] = draw(common["data"])
        ex["head_dim"] = draw(common["head_dim"])
        ex["heads"], ex["kv_heads"] = draw(common["layout"])
        ex["scale"] = draw(common["scale"])
        ex["batch"] = draw(st.integers(1, 3))
        ex["causal"] = draw(causal)
        ex["window"] = None
        lk = draw(st.integers(1, longest))
        lq = draw(st.integers(1, lk)) if ex["causal"] else draw(st.integers(1, longest))
        ex["q_len"], ex["k_len"] = lq, lk
        if regime in ("dense", "gqa", "window"):
            if regime == "window" or (window_ok and not gradient and draw(st.booleans())):
                ex["causal"] = causal_ok and draw(st.booleans())
                ex["window"] = draw(st.integers(1, 40))
                if ex["causal"] and lq > lk:
                    ex["q_len"], ex["k_len"] = lk, lq
        elif regime == "mask":
            ex["mask"] = {
                "kind": draw(st.sampled_from(("bool", "float"))),
                "shape": draw(st.sampled_from(("b1qk", "bhqk", "11qk", "b11k", "1hqk"))),
                "keep": draw(st.floats(0.05, 1.0)),
                "bias": draw(st.sampled_from((0.0, 1.0, 8.0))),
                "empty_rows": draw(st.integers(0, 0 if gradient else 3)),
            }
        elif regime == "magnitude":
            ex["scale"] = draw(st.one_of(st.none(), st.floats(0.05, 1.0)))
            ex["score"] = draw(st.sampled_from((1e2, 1e3, MAX_SCORE)) | st.floats(16.0, MAX_SCORE))
        elif regime == "strided":
            ex["strides"] = [
                draw(st.sampled_from(("contiguous", "bshd", "every-other", "broadcast"))) for _ in "qkv"
            ]
        elif regime == "decode":
            ex["batch"], ex["q_len"] = 1, 1
            # Few heads and head dims up to 128, so 32k keys stay within a few hundred MiB of float64.
            ex["heads"], ex["kv_heads"] = draw(
                st.sampled_from(((2, 1), (4, 2), (2, 2)) if facet.get("gqa") else ((2, 2),))
            )
            ranges = facet.get("head_dim_ranges") or ()
            small = [d for d in (facet.get("head_dims") or ()) if d <= 128]
            if small:
                ex["head_dim"] = draw(st.sampled_from(sorted(small)))
            else:
                inside = [d for d in (64, 128) if any(lo <= d <= hi and d % m == 0 for lo, hi, m in ranges)]
                ex["head_dim"] = draw(st.sampled_from(inside)) if inside else ex["head_dim"]
            near = st.tuples(st.integers(7, 15), st.integers(-1, 1)).map(lambda t: 2 ** t[0] + t[1])
            ex["k_len"] = draw(near | st.integers(1, MAX_DECODE_KEYS))
            ex["causal"] = causal_ok
        elif regime == "chunked":
            ex["causal"] = True
            ex["k_len"] = draw(st.integers(3, 2049))
            ex["q_len"] = draw(st.integers(2, min(64, ex["k_len"] - 1)))
            ex["window"] = draw(st.none() | st.integers(1, 64)) if window_ok else None
            ex["batch"] = 1
        elif regime == "varlen":
            n = draw(st.integers(1, 6))
            pairs = []
            for _ in range(n):
                k = draw(st.integers(0, 24 if gradient else 90))
                pairs.append((draw(st.integers(0, k)) if ex["causal"] else draw(st.integers(0, 40)), k))
            if all(q == 0 for q, _ in pairs):
                pairs[0] = (1, max(1, pairs[0][1]))
                if pairs[0][1] == 0:
                    pairs[0] = (1, 1)
            if all(k == 0 for _, k in pairs):
                pairs[-1] = (pairs[-1][0], max(1, pairs[-1][0]))
            ex["q_lengths"] = [q for q, _ in pairs]
            ex["k_lengths"] = [k for _, k in pairs]
            ex["pad"] = draw(st.integers(0, 3))
            ex["batch"] = 1
        return ex

    return build()


def explicit_examples(regime: str, facet: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Examples every run includes whatever the draw: the extremes of the regime."""
    dims = (
        sorted(facet.get("head_dims") or ())
        or [hi // m * m for _lo, hi, m in facet.get("head_dim_ranges") or ()]
        or [64]
    )
    base = {
        "regime": regime,
        "data": 7,
        "head_dim": dims[0] if len(dims) == 1 else next((d for d in dims if d in (64, 128)), dims[0]),
        "heads": 2,
        "kv_heads": 2,
        "scale": None,
        "batch": 1,
        "causal": bool(facet.get("causal", True)),
        "window": None,
    }
    if regime == "decode":
        return [{**base, "q_len": 1, "k_len": MAX_DECODE_KEYS}]
    if regime == "magnitude":
        return [{**base, "q_len": 33, "k_len": 33, "score": MAX_SCORE}]
    if regime == "mask":
        return [
            {
                **base,
                "q_len": 9,
                "k_len": 12,
                "causal": False,
                "batch": 2,
                "mask": {"kind": kind, "shape": "b1qk", "keep": 0.5, "bias": 1.0, "empty_rows": 2},
            }
            for kind in ("bool", "float")
        ]
    return []


# -- inputs -----------------------------------------------------------------------------------------


def _layout_tensor(shape: tuple[int, ...], how: str, *, seed: int, dtype: Any, device: str) -> Any:
    """A ``(B, H, L, D)`` tensor with the values of ``am.randn(shape, seed)`` in the memory layout
    ``how`` (``contiguous``; ``bshd``: a ``(B, L, H, D)`` buffer transposed; ``every-other``: every
    second element of a buffer twice as wide in D; ``broadcast``: one batch row expanded, stride 0)."""
    b, h, length, d = shape
    if how == "broadcast":
        return am.randn((1, h, length, d), seed=seed, dtype=dtype, device=device).expand(b, h, length, d)
    values = am.randn(shape, seed=seed, dtype=dtype, device=device)
    if how == "bshd":
        return values.transpose(1, 2).contiguous().transpose(1, 2)
    if how == "every-other":
        import torch

        wide = torch.full((b, h, length, 2 * d), float("nan"), dtype=dtype, device=device)
        wide[..., ::2] = values
        return wide[..., ::2]
    return values


def dense_inputs(ex: Mapping[str, Any], dtype: Any, device: str) -> tuple[Any, Any, Any]:
    b, h, kv, d = ex["batch"], ex["heads"], ex["kv_heads"], ex["head_dim"]
    lq, lk, seed = ex["q_len"], ex["k_len"], ex["data"]
    layouts = ex.get("strides") or ["contiguous"] * 3
    q = _layout_tensor((b, h, lq, d), layouts[0], seed=seed, dtype=dtype, device=device)
    k = _layout_tensor((b, kv, lk, d), layouts[1], seed=seed + 1, dtype=dtype, device=device)
    v = _layout_tensor((b, kv, lk, d), layouts[2], seed=seed + 2, dtype=dtype, device=device)
    if "score" in ex:
        q, k = _magnify(q, k, ex, dtype)
    return q, k, v


def _magnify(q: Any, k: Any, ex: Mapping[str, Any], dtype: Any) -> tuple[Any, Any]:
    """Scale q and k alike so that the largest scaled score is about ``ex["score"]`` (never more
    than a quarter of what ``dtype`` holds for the unscaled dot product)."""
    import torch

    d = q.shape[-1]
    scale = ex["scale"] if ex["scale"] is not None else 1.0 / math.sqrt(d)
    qd, kd = q.double(), k.double()
    group = q.shape[1] // k.shape[1]
    raw = (qd @ kd.repeat_interleave(group, dim=1).transpose(-1, -2)).abs().max().item()
    target = min(float(ex["score"]), 0.25 * torch.finfo(dtype).max * scale)
    factor = math.sqrt(target / max(raw * scale, 1e-30))
    return (qd * factor).to(dtype), (kd * factor).to(dtype)


def make_mask(ex: Mapping[str, Any], dtype: Any, device: str) -> Any:
    """The example's mask at its broadcast shape; ``empty_rows`` query rows (of the first batch
    row and head the shape has) masked entirely."""
    import torch

    spec = ex["mask"]
    b, h, lq, lk = ex["batch"], ex["heads"], ex["q_len"], ex["k_len"]
    shape = {
        "b1qk": (b, 1, lq, lk),
        "bhqk": (b, h, lq, lk),
        "11qk": (1, 1, lq, lk),
        "b11k": (b, 1, 1, lk),
        "1hqk": (1, h, lq, lk),
    }[spec["shape"]]
    gen = torch.Generator().manual_seed(ex["data"] + 3)
    keep = torch.rand(shape, generator=gen) < spec["keep"]
    rows = torch.randperm(shape[2], generator=gen)[: spec["empty_rows"]]
    keep[0, 0, rows] = False
    if spec["kind"] == "bool":
        return keep.to(device)
    bias = torch.randn(shape, generator=gen) * spec["bias"]
    return bias.masked_fill(~keep, float("-inf")).to(dtype).to(device)


def empty_rows(ex: Mapping[str, Any], mask: Any) -> Any:
    """Boolean ``(B, H, Lq)``: the query rows that may attend no key (mask, causality and window)."""
    import torch

    b, h, lq, lk = ex["batch"], ex["heads"], ex["q_len"], ex["k_len"]
    allowed = am.allowed_mask(lq, lk, causal=ex["causal"], window=ex["window"]).expand(b, h, lq, lk)
    if mask is not None:
        m = mask.cpu()
        allowed = allowed & (m if m.dtype == torch.bool else m != float("-inf"))
    return ~allowed.any(-1)


def packed_inputs(ex: Mapping[str, Any], dtype: Any, device: str) -> tuple[Any, ...]:
    import torch

    h, kv, d, pad, seed = ex["heads"], ex["kv_heads"], ex["head_dim"], ex["pad"], ex["data"]
    tq, tk = sum(ex["q_lengths"]), sum(ex["k_lengths"])
    q = am.randn((tq + pad, h, d), seed=seed, dtype=dtype, device=device)
    k = am.randn((tk + pad, kv, d), seed=seed + 1, dtype=dtype, device=device)
    v = am.randn((tk + pad, kv, d), seed=seed + 2, dtype=dtype, device=device)
    for t, total in ((q, tq), (k, tk), (v, tk)):
        t[total:] = float("nan")

    def cu(lengths: list[int]) -> Any:
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)

    return q, k, v, cu(ex["q_lengths"]), cu(ex["k_lengths"])


def _varlen_reference(
    ex: Mapping[str, Any], q: Any, k: Any, v: Any, fn: Callable[..., Any], *, grad_dtype: Any = None
) -> Any:
    """Per-sequence attention by ``fn`` (``am.reference`` or ``am.plain_torch``) packed like q."""
    import torch

    outs = []
    cq = [0, *torch.tensor(ex["q_lengths"]).cumsum(0).tolist()]
    ck = [0, *torch.tensor(ex["k_lengths"]).cumsum(0).tolist()]
    for i in range(len(ex["q_lengths"])):
        qi = q[cq[i] : cq[i + 1]].transpose(0, 1)[None]
        ki, vi = (t[ck[i] : ck[i + 1]].transpose(0, 1)[None] for t in (k, v))
        if qi.shape[2] == 0:
            continue
        if ki.shape[2] == 0:
            outs.append(torch.zeros_like(q[cq[i] : cq[i + 1]]))
            continue
        o = fn(qi, ki, vi, causal=ex["causal"], scale=ex["scale"])
        outs.append(o[0].transpose(0, 1))
    body = torch.cat(outs) if outs else q[:0]
    tail = torch.zeros_like(q[cq[-1] :])
    return torch.cat([body.to(q.dtype), tail])


# -- checks -----------------------------------------------------------------------------------------


def resolve(rt: Any, facet: Mapping[str, Any], ex: Mapping[str, Any], *, varlen: bool = False) -> Any:
    """The plugin's backend for the example's spec; Refused when it refuses or defers it."""
    from rlport.errors import UnsupportedAttention
    from rlport.types import AttentionSpec

    spec = AttentionSpec(
        dtype=facet["dtype"],
        head_dim=ex["head_dim"],
        num_heads=ex["heads"],
        num_kv_heads=ex["kv_heads"],
        causal=ex["causal"],
        varlen=varlen,
        window=ex.get("window"),
        device_type=rt.device.device_type,
    )
    try:
        backend = rt.attention_backend(spec)
    except UnsupportedAttention as exc:
        raise Refused(f"claimed, but refused with UnsupportedAttention: {exc.message}") from exc
    answered = rt.attention_resolutions.get(spec)
    if answered is not None and answered.plugin == "reference":
        raise Refused(
            "claimed, but the plugin's rlport_attention_backend returned None for this spec and the "
            "reference answered"
        )
    return backend


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    from rlport.errors import UnsupportedAttention

    try:
        return fn(*args, **kwargs)
    except UnsupportedAttention as exc:
        raise Refused(f"claimed, but the call raised UnsupportedAttention: {exc.message}") from exc


def _call_varlen(backend: Any, ex: Mapping[str, Any], q: Any, k: Any, v: Any, cu_q: Any, cu_k: Any) -> Any:
    return _call(
        backend.forward_varlen,
        q,
        k,
        v,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=max(ex["q_lengths"]),
        max_seqlen_k=max(ex["k_lengths"]),
        causal=ex["causal"],
        scale=ex["scale"],
    )


def check_forward(rt: Any, device: str, facet: Mapping[str, Any], ex: Mapping[str, Any]) -> Judgement:
    """Judge one forward example against float64 (the suite's forward rule)."""

    dtype = am.DTYPES[facet["dtype"]]
    if ex["regime"] == "varlen":
        backend = resolve(rt, facet, ex, varlen=True)
        q, k, v, cu_q, cu_k = packed_inputs(ex, dtype, device)
        copies = [t.clone() for t in (q, k, v)]
        out = _call_varlen(backend, ex, q, k, v, cu_q, cu_k)
        ref = _varlen_reference(ex, *(t.detach().cpu().double() for t in (q, k, v)), am.reference)
        plain = am.max_error(_varlen_reference(ex, q, k, v, am.plain_torch), ref)
        judgement = judge(am.max_error(out, ref), plain, am.rounding_error(ref, dtype))
        return _with_unwritten(judgement, copies, [q, k, v])
    backend = resolve(rt, facet, ex)
    q, k, v = dense_inputs(ex, dtype, device)
    mask = make_mask(ex, dtype, device) if "mask" in ex else None
    copies = [t.clone() for t in (q, k, v)]
    out = _call(backend.forward, q, k, v, causal=ex["causal"], scale=ex["scale"], mask=mask)
    kwargs = {"causal": ex["causal"], "scale": ex["scale"], "window": ex["window"], "mask": mask}
    ref = am.reference(q, k, v, **kwargs)
    plain = am.plain_error(q, k, v, ref, **kwargs)
    judgement = judge(am.max_error(out, ref), plain, am.rounding_error(ref, dtype))
    if judgement.status is not Status.FAIL and mask is not None:
        rows = empty_rows(ex, mask)
        if bool(rows.any()):
            worst = float(out.detach().cpu().double()[rows].abs().nan_to_num(math.inf).max())
            if worst != 0.0:
                return Judgement(
                    Status.FAIL,
                    {**judgement.metrics, "fully_masked_row_max": worst},
                    f"{int(rows.sum())} query rows may attend no key ({ex['mask']['kind']} mask) but "
                    f"got values up to {worst:.3g}; such rows must return zeros",
                )
    return _with_unwritten(judgement, copies, [q, k, v])


def _with_unwritten(judgement: Judgement, before: list[Any], after: list[Any]) -> Judgement:
    import torch

    for name, a, b in zip("qkv", before, after, strict=True):
        if not torch.equal(a.nan_to_num(0.5), b.nan_to_num(0.5)):
            return Judgement(Status.FAIL, judgement.metrics, f"the backend wrote into its input {name}")
    return judgement


def check_gradient(rt: Any, device: str, facet: Mapping[str, Any], ex: Mapping[str, Any]) -> Judgement:
    """Judge dQ, dK and dV of one example against float64 autograd (the rule's gradient factor)."""
    import torch

    dtype = am.DTYPES[facet["dtype"]]
    varlen = ex["regime"] == "varlen"
    backend = resolve(rt, facet, ex, varlen=varlen)
    if varlen:
        q, k, v, cu_q, cu_k = packed_inputs(ex, dtype, device)
        mask = None
    else:
        q, k, v = dense_inputs(ex, dtype, device)
        mask = make_mask(ex, dtype, device) if "mask" in ex else None
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    if varlen:
        out = _call_varlen(backend, ex, *leaves, cu_q, cu_k)
    else:
        out = _call(backend.forward, *leaves, causal=ex["causal"], scale=ex["scale"], mask=mask)
    if not getattr(out, "requires_grad", False):
        return Judgement(
            Status.FAIL, {}, "the backend's output does not require grad: training cannot use it"
        )
    grad_out = am.randn(tuple(out.shape), seed=ex["data"] + 5, dtype=dtype, device=device)
    if varlen:
        grad_out[sum(ex["q_lengths"]) :] = 0
    got = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    got = [torch.zeros_like(t) if g is None else g for g, t in zip(got, leaves, strict=True)]

    def grads(tensors: list[Any], gout: Any, fn: Callable[..., Any]) -> list[Any]:
        xs = [t.detach().clone().nan_to_num(0.0).requires_grad_(True) for t in tensors]
        if varlen:
            o = _varlen_reference(ex, *xs, fn)
        else:
            m = None if mask is None else mask.to(xs[0].device)
            if m is not None and m.dtype != torch.bool:
                m = m.to(xs[0].dtype)
            o = fn(*xs, causal=ex["causal"], scale=ex["scale"], window=ex["window"], mask=m)
        gs = torch.autograd.grad(o, xs, gout.to(o.dtype).to(o.device), allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, xs, strict=True)]

    refs = grads([t.cpu().double() for t in (q, k, v)], grad_out.cpu().double(), safe_attend)
    plains = grads([q, k, v], grad_out, safe_attend)
    # torch's own fused kernel on the host, in the same dtype: plain PyTorch too (its CPU backward
    # recomputes the softmax with a fast exp, several times less exact in float32 than the math).
    hosts = grads([t.cpu() for t in (q, k, v)], grad_out.cpu(), host_sdpa)
    rounding = max(am.rounding_error(r, dtype) for r in refs)
    worst: Judgement | None = None
    for name, g, r, p, h in zip(("dq", "dk", "dv"), got, refs, plains, hosts, strict=True):
        baseline = am.max_error(p, r)
        host = am.max_error(h, r)
        if math.isfinite(host):
            baseline = max(baseline, host)
        j = judge(am.max_error(g, r), baseline, rounding, k=GRADIENT_K)
        j = Judgement(
            j.status,
            {f"{name}_{key}": val for key, val in j.metrics.items()},
            j.message and f"{name}: {j.message}",
        )
        if worst is None or _rank(j.status) > _rank(worst.status):
            worst = Judgement(j.status, {**(worst.metrics if worst else {}), **j.metrics}, j.message)
        else:
            worst = Judgement(worst.status, {**worst.metrics, **j.metrics}, worst.message)
    assert worst is not None
    return worst


def _allowed(q: Any, k: Any, causal: bool, window: int | None, mask: Any) -> tuple[Any, Any]:
    """(allowed keys, additive bias or None) of dense inputs, every constraint combined."""
    import torch

    allowed = am.allowed_mask(q.shape[2], k.shape[2], causal=causal, window=window).to(q.device)
    bias = None
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            allowed = allowed & (mask != float("-inf"))
            bias = mask.masked_fill(mask == float("-inf"), 0.0).to(q.dtype)
    return allowed, bias


def safe_attend(
    q: Any, k: Any, v: Any, *, causal: bool, scale: Any = None, window: Any = None, mask: Any = None
) -> Any:
    """Explicit attention in the inputs' dtype, differentiable and NaN-free: a row with no key to
    attend gives zeros forward and zero gradients (``am.reference`` detaches, and a softmax over
    ``-inf`` only gives NaN gradients)."""
    import torch

    heads, kv_heads = q.shape[1], k.shape[1]
    index = torch.arange(heads, device=q.device) // (heads // kv_heads)
    k, v = k[:, index], v[:, index]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    allowed, bias = _allowed(q, k, causal, window, mask)
    if bias is not None:
        scores = scores + bias
    allowed = allowed.expand(scores.shape)
    empty = ~allowed.any(-1, keepdim=True)
    scores = scores.masked_fill(~allowed, float("-inf")).masked_fill(empty, 0.0)
    probs = torch.softmax(scores, dim=-1).masked_fill(empty, 0.0)
    return probs @ v


def host_sdpa(
    q: Any, k: Any, v: Any, *, causal: bool, scale: Any = None, window: Any = None, mask: Any = None
) -> Any:
    """torch's ``scaled_dot_product_attention`` (bottom-right causal, window and mask combined)."""
    import torch

    allowed, bias = _allowed(q, k, causal, window, mask)
    attn = allowed if bias is None else bias.masked_fill(~allowed, float("-inf"))
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attn, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )


def _rank(status: Status) -> int:
    return {Status.PASS: 0, Status.QUALITY_WARNING: 1}.get(status, 2)


# -- running a case ---------------------------------------------------------------------------------


#: The shrink budget of a failing case: at most this many more examples judged (kernel calls), and
#: no new one started after this many seconds. A passing case never shrinks, so it costs nothing.
SHRINK_CALLS = 60
SHRINK_SECONDS = 30.0


class _Failed(Exception):
    """Raised to Hypothesis for a failing example, always from one place, so that Hypothesis sees
    one failure to shrink."""


def _kind(j: Judgement, raised: str | None) -> str:
    """What kind of failure: shrinking keeps to examples that fail the same way (a wrong result does
    not shrink into a refusal or a crash)."""
    return raised or ("refused" if j.metrics.get("refused") else "wrong")


def run_case(
    case_id: str,
    regime: str,
    facet: Mapping[str, Any],
    check: Callable[[Mapping[str, Any]], Judgement],
    *,
    gradient: bool = False,
    examples: int | None = None,
) -> Outcome:
    """Run ``check`` over the generated examples of ``regime``. The first failure ends the
    generation; Hypothesis then shrinks it (within :data:`SHRINK_CALLS` and :data:`SHRINK_SECONDS`)
    to the smallest example it finds that fails the same way, and both go into the outcome."""
    import time

    from hypothesis import HealthCheck, Phase, example, given, seed, settings

    count = examples or (GRADIENT_REGIMES if gradient else FORWARD_REGIMES)[regime]
    import hypothesis

    # The examples a seed draws depend on the Hypothesis version; the example dict in a report does
    # not (replay() needs only it), so the version is recorded beside the seed.
    outcome = Outcome(
        metrics={
            "hypothesis_seed": seed_of(case_id),
            "hypothesis_version": hypothesis.__version__,
            "derandomize": True,
        }
    )
    ratios: list[float] = []
    judged: dict[str, tuple[Judgement, str]] = {}  # example JSON -> (judgement, kind of failure)
    shrink: dict[str, Any] = {"calls": 0, "started": 0.0, "kind": "", "example": None, "message": None}

    def judge_one(ex: dict[str, Any]) -> tuple[Judgement, str]:
        raised = None
        try:
            j = check(ex)
        except Refused as exc:
            j = Judgement(Status.FAIL, {"refused": True}, str(exc))
        except Exception as exc:  # a crash of the kernel on a legal input is a failure of the case
            j, raised = Judgement(Status.FAIL, {}, f"raised {type(exc).__name__}: {exc}"), type(exc).__name__
        return j, _kind(j, raised)

    def one(ex: dict[str, Any]) -> None:
        key = json.dumps(ex, sort_keys=True)
        if key not in judged:
            if outcome.failing is not None:  # shrinking: within the budget only
                spent = time.monotonic() - shrink["started"]
                if shrink["calls"] >= SHRINK_CALLS or spent > SHRINK_SECONDS:
                    return
                shrink["calls"] += 1
            judged[key] = judge_one(ex)
        j, kind = judged[key]
        if outcome.failing is None:
            index = outcome.examples
            outcome.examples += 1
            ratio = j.metrics.get("ratio", j.metrics.get("dq_ratio"))
            if isinstance(ratio, float) and math.isfinite(ratio):
                ratios.append(ratio)
            if j.status is Status.FAIL:
                outcome.status, outcome.failing, outcome.index = Status.FAIL, ex, index
                outcome.message = j.message
                outcome.metrics.update({k: v for k, v in j.metrics.items() if k != "refused"})
                shrink.update(started=time.monotonic(), kind=kind)
            elif j.status is Status.QUALITY_WARNING and outcome.status is Status.PASS:
                outcome.status, outcome.message = Status.QUALITY_WARNING, f"example {index}: {j.message}"
        elif j.status is Status.FAIL and kind == shrink["kind"] and ex != outcome.failing:
            # Hypothesis tries only candidates smaller than its current one: the last that fails is
            # the smallest
            shrink.update(example=ex, message=j.message)
        if j.status is Status.FAIL and kind == shrink["kind"]:
            raise _Failed(kind)

    test = given(strategy(regime, facet, gradient=gradient))(one)
    for ex in reversed(explicit_examples(regime, facet) if not gradient else []):
        test = example(ex)(test)
    test = settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )(test)
    test = seed(seed_of(case_id))(test)
    with contextlib.suppress(_Failed):  # the failing example is in ``outcome``
        test()
    outcome.metrics["examples"] = outcome.examples
    if ratios:
        outcome.metrics["worst_ratio"] = max(ratios)
    if outcome.failing is not None:
        outcome.metrics["example"] = outcome.failing
        outcome.metrics["example_index"] = outcome.index
        outcome.metrics["shrink_calls"] = shrink["calls"]
        found = f"; example: {json.dumps(outcome.failing, sort_keys=True)}"
        if shrink["example"] is not None:
            outcome.metrics["shrunk_example"] = shrink["example"]
            found += (
                f"; shrunk in {shrink['calls']} calls to the smaller example "
                f"{json.dumps(shrink['example'], sort_keys=True)}: {shrink['message']}"
            )
        elif shrink["calls"]:
            found += f"; no smaller example fails the same way ({shrink['calls']} tried)"
        outcome.message = (
            f"generated example {outcome.index} (hypothesis seed {seed_of(case_id)}, derandomized): "
            f"{outcome.message}{found}; replay one with "
            f"rlport_conformance.generated.replay({case_id!r}, <the example>), or the case with "
            f"-k {case_id!r}"
        )
    return outcome


def replay(case_id: str, ex: Mapping[str, Any] | str, plugin: str | None = None) -> Judgement:
    """Run one generated example (a dict, or its JSON from a report) of case ``case_id`` against the
    plugin rlport selects (or ``plugin``) and return the judgement: the way a vendor reproduces a
    failure from a report without the rest of the suite."""
    import os

    import rlport
    from rlport_conformance.plan import capabilities_to_dict, plan

    if plugin:
        os.environ["RLPORT_DEVICE"] = plugin
    os.environ.setdefault("RLPORT_SUMMARY", "0")
    example_dict = json.loads(ex) if isinstance(ex, str) else dict(ex)
    rt = rlport.init()
    declared = capabilities_to_dict(rt.capabilities())
    planned = next(c for c in plan(declared) if c.id == case_id)
    fn = check_gradient if planned.kind == "attention.gradient" else check_forward
    return fn(rt, rt.torch_device(), planned.facet, example_dict)
