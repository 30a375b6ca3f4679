"""Deliberately broken device plugins ("mutants") for the suite's own tests.

Each mutant is a real installed distribution (``rlport.testing.make_distribution``): a device plugin
``mutant_<defect>`` with priority 10 whose attention, memory and collectives are correct except for one
seeded defect. The suite must reject every one of them, naming the case the defect breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlport.testing import make_distribution

SOURCE = r'''
"""Mutant device plugin with one seeded defect: DEFECT."""

import math

from rlport.hookspecs import hookimpl
from rlport.types import Capabilities, DeviceInfo, EngineOffer, Manifest, ProbeResult

DEFECT = "@DEFECT@"
BACKEND = "mutant_" + DEFECT


def _attend(q, k, v, causal, scale, mask):
    import torch

    dtype = q.dtype
    heads, kv_heads = q.shape[1], k.shape[1]
    group = heads // kv_heads
    if DEFECT == "gqa_wrong_head":
        index = [h % kv_heads for h in range(heads)]
    else:
        index = [h // group for h in range(heads)]
    k, v = k[:, index].float(), v[:, index].float()
    if scale is None:
        scale = 1.0 / q.shape[-1] if DEFECT == "softmax_scale" else 1.0 / math.sqrt(q.shape[-1])
    scores = (q.float() @ k.transpose(-1, -2)) * scale
    lq, lk = q.shape[2], k.shape[2]
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
    if causal:
        pos = torch.arange(lq, device=q.device)[:, None] + (lk - lq)
        keys = torch.arange(lk, device=q.device)[None, :]
        allowed = keys <= (pos + 1 if DEFECT == "causal_off_by_one" else pos)
    if DEFECT == "bf16_tail" and dtype == torch.bfloat16:
        allowed = allowed & (torch.arange(lk, device=q.device)[None, :] < (lk // 32) * 32)  # drops the tail tile
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = allowed & mask
        else:
            scores = scores + mask.float()
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return (probs @ v).to(dtype)


class Backend:
    name = "mutant"

    def forward(self, q, k, v, *, causal, scale=None, mask=None):
        import torch

        from rlport.errors import UnsupportedAttention

        if DEFECT == "crash_bf16" and q.dtype == torch.bfloat16:
            import os

            os.abort()  # a kernel that takes the process down
        if DEFECT == "hang_bf16" and q.dtype == torch.bfloat16:
            import time

            time.sleep(3600)  # a kernel that never returns
        if DEFECT == "skip_case" and q.dtype == torch.bfloat16:
            import pytest

            pytest.skip("mutant: bfloat16 is not today")
        if q.shape[1] % k.shape[1]:
            if DEFECT == "unsupported_garbage":
                return torch.zeros_like(q)
            raise UnsupportedAttention(f"{q.shape[1]} heads over {k.shape[1]} kv heads", "use divisible heads")
        return _attend(q, k, v, causal, scale, mask)

    def forward_varlen(self, q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                       scale=None):
        import torch

        out = torch.zeros_like(q)
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        if DEFECT == "varlen_leak":  # one causal pass over the whole pack: crosses sequence boundaries
            s, e = cq[0], cq[-1]
            out[s:e] = _attend(q[s:e].transpose(0, 1)[None], k[s:e].transpose(0, 1)[None],
                               v[s:e].transpose(0, 1)[None], True, scale, None)[0].transpose(0, 1)
            return out
        for i in range(len(cq) - 1):
            qs, qe, ks, ke = cq[i], cq[i + 1], ck[i], ck[i + 1]
            if qe > qs and ke > ks:
                out[qs:qe] = _attend(q[qs:qe].transpose(0, 1)[None], k[ks:ke].transpose(0, 1)[None],
                                     v[ks:ke].transpose(0, 1)[None], causal, scale, None)[0].transpose(0, 1)
        return out


def _memory():
    import torch

    from rlport.memory import HostMemory

    class Memory(HostMemory):
        name = "mutant-host"

        stale = {}

        def park(self, storage):
            if DEFECT == "sleep_frees_nothing":  # "parks" in the very memory it claims to free
                return torch.empty(0, dtype=torch.uint8).set_(storage).clone()
            if DEFECT == "wake_stale":  # keeps the bytes of the first sleep of each storage
                key = storage._cdata
                if key not in self.stale:
                    self.stale[key] = torch.empty(0, dtype=torch.uint8).set_(storage).clone()
                return self.stale[key]
            return super().park(storage)

        def unpark(self, handle, storage):
            view = torch.empty(0, dtype=torch.uint8).set_(storage)
            if DEFECT in ("sleep_frees_nothing", "wake_stale"):
                view.copy_(handle)
            elif DEFECT == "wake_zeroed":
                handle.close()
                view.zero_()
            else:
                super().unpark(handle, storage)

    return Memory()


def _register_backend():
    import torch
    import torch.distributed as dist
    from torch._C._distributed_c10d import _create_work_from_future

    if BACKEND.upper() in getattr(dist.Backend, "_plugins", {}):
        return

    class MutantGroup(dist.ProcessGroup):
        def __init__(self, store, rank, size, timeout):
            super().__init__(rank, size)
            self._inner = dist.ProcessGroupGloo(store, rank, size, timeout)

        def _done(self, value):
            future = torch.futures.Future()
            future.set_result(value)
            return _create_work_from_future(future)

        def allreduce(self, tensors, opts):
            self._inner.allreduce(tensors, opts).wait()
            if DEFECT == "all_reduce_average":
                for t in tensors:
                    if t.is_floating_point():
                        t.div_(self.size())
                    else:
                        t.floor_divide_(self.size())
            return self._done(tensors)

        def allgather(self, outputs, inputs, opts):
            self._inner.allgather(outputs, inputs, opts).wait()
            if DEFECT == "all_gather_order":
                for outs in outputs:
                    saved = [t.clone() for t in outs]
                    for t, src in zip(outs, reversed(saved)):
                        t.copy_(src)
            return self._done(outputs)

        def all_gather_single(self, output, input, opts):
            return self._inner._allgather_base(output, input, opts)

        def reduce_scatter_single(self, output, input, opts):
            return self._inner._reduce_scatter_base(output, input, opts)

        def reduce_scatter(self, outputs, inputs, opts):
            return self._inner.reduce_scatter(outputs, inputs, opts)

        def broadcast(self, tensors, opts):
            if DEFECT == "broadcast_root":
                opts.rootRank = 0
            return self._inner.broadcast(tensors, opts)

        def barrier(self, opts):
            return self._inner.barrier(opts)

        def getBackendName(self):
            return BACKEND

        def name(self):
            return BACKEND

    def create(store, rank, size, timeout):
        return MutantGroup(store, rank, size, timeout)

    dist.Backend.register_backend(BACKEND, create, devices=["cpu"])


def make_engine(config):
    """The HF engine, seeded the way vLLM seeds a request's n samples: every prompt of a call starts
    from the call's seed, so copies of one prompt get the same samples."""
    from rlport.rollout.hf_engine import HFEngine

    class RepeatEngine(HFEngine):
        name = "mutant_engine"

        def generate(self, prompts, params):
            return [HFEngine.generate(self, [prompt], params)[0] for prompt in prompts]

    return RepeatEngine(config)


ENGINES = [EngineOffer("mutant_engine", factory=__name__ + ":make_engine")] if DEFECT == "repeat_samples" else []


class Plugin:
    rlport_manifest = Manifest(name="mutant_" + DEFECT, kind="device", hook_api=">=1.0,<2",
                               description="conformance mutant: " + DEFECT)

    @hookimpl
    def rlport_probe(self):
        return ProbeResult(available=True, reason="a conformance mutant runs anywhere", priority=10)

    @hookimpl
    def rlport_device_info(self):
        return DeviceInfo(device_type="cpu", count=1, names=("mutant",), collectives_backend="gloo")

    @hookimpl
    def rlport_attention_backend(self, spec):
        if spec.window is not None:
            return None  # the reference serves sliding windows
        return Backend()

    @hookimpl
    def rlport_memory_backend(self, device):
        return _memory()

    @hookimpl
    def rlport_collectives_backend(self, device):
        if DEFECT in ("all_reduce_average", "all_gather_order", "broadcast_root"):
            _register_backend()
            return BACKEND
        return None

    @hookimpl
    def rlport_rollout_engines(self):
        return ENGINES

    @hookimpl
    def rlport_capabilities(self):
        return Capabilities(
            dtypes=("float32", "bfloat16"),
            head_dims=(64, 128),
            causal=True,
            varlen=True,
            gqa=True,
            deterministic=True,
            sleep_tags=("weights",),
            collectives=("all_reduce", "all_gather", "reduce_scatter", "broadcast"),
            rollout_engines=tuple(e.name for e in ENGINES),
        )


plugin = Plugin()
'''


@dataclass(frozen=True)
class Mutant:
    """A seeded defect, the cases to run for it (``-k``), the case ids that must come out failed,
    the ones that must not (so the suite names the right case, not everything), and the verdict."""

    defect: str
    keyword: str
    must_fail: tuple[str, ...]
    must_pass: tuple[str, ...] = ()
    verdict: str = "NOT_CONFORMANT"

    @property
    def plugin(self) -> str:
        return f"mutant_{self.defect}"


MUTANTS = [
    Mutant(
        "softmax_scale",
        "attention.forward and float32 and d64",
        ("attention.forward[float32-d64-causal-mha]", "attention.forward[float32-d64-full-mha]"),
    ),
    Mutant(
        "causal_off_by_one",
        "attention.forward and float32 and d64",
        ("attention.forward[float32-d64-causal-mha]",),
        ("attention.forward[float32-d64-full-mha]",),
    ),
    Mutant(
        "varlen_leak",
        "attention.varlen and float32",
        ("attention.varlen[float32-d64-causal-mha]", "attention.varlen[float32-d64-full-mha]"),
    ),
    Mutant(
        "gqa_wrong_head",
        "attention.forward and float32 and d64",
        ("attention.forward[float32-d64-causal-gqa]",),
        ("attention.forward[float32-d64-causal-mqa]", "attention.forward[float32-d64-causal-mha]"),
    ),
    Mutant(
        "bf16_tail",
        "attention.forward and d64 and mha",
        ("attention.forward[bfloat16-d64-causal-mha]", "attention.forward[bfloat16-d64-full-mha]"),
        ("attention.forward[float32-d64-causal-mha]", "attention.forward[float32-d64-full-mha]"),
    ),
    Mutant("unsupported_garbage", "attention.unsupported", ("attention.unsupported[heads-not-divisible]",)),
    Mutant(
        "all_reduce_average",
        "(collectives.all_reduce or collectives.preflight) and r2",
        (
            "collectives.all_reduce[float32-n7-r2]",
            "collectives.all_reduce[int32-n65537-r2]",
            "collectives.preflight[r2]",
        ),
    ),
    Mutant(
        "all_gather_order",
        "collectives.all_gather and r2",
        ("collectives.all_gather[float32-n1-r2]", "collectives.all_gather[bfloat16-n1023-r2]"),
    ),
    Mutant(
        "broadcast_root",
        "collectives.broadcast and float32 and r2",
        ("collectives.broadcast[float32-n7-r2-root1]",),
        ("collectives.broadcast[float32-n7-r2-root0]",),
    ),
    Mutant(
        "sleep_frees_nothing",
        "memory.sleep_frees or memory.wake_restores",
        ("memory.sleep_frees[weights]",),
        ("memory.wake_restores[weights]",),
    ),
    Mutant("wake_zeroed", "memory.wake_restores", ("memory.wake_restores[weights]",)),
    Mutant("wake_stale", "memory.wake_restores", ("memory.wake_restores[weights]",)),
    Mutant(
        "repeat_samples",
        "rollout.independent_samples or rollout.greedy_agreement",
        ("rollout.independent_samples[mutant_engine]",),
        ("rollout.greedy_agreement[mutant_engine]",),
    ),
    Mutant(
        "crash_bf16",
        "attention.forward and d64 and mha",
        ("attention.forward[bfloat16-d64-causal-mha]", "attention.forward[bfloat16-d64-full-mha]"),
        ("attention.forward[float32-d64-causal-mha]", "attention.forward[float32-d64-full-mha]"),
    ),
    Mutant(
        "skip_case",
        "attention.forward and d64 and mha",
        ("attention.forward[bfloat16-d64-causal-mha]", "attention.forward[bfloat16-d64-full-mha]"),
        ("attention.forward[float32-d64-causal-mha]",),
    ),
]


def build(root: Path, defect: str) -> Path:
    """Install mutant ``defect`` as a distribution in ``root`` (put ``root`` on the path to use it)."""
    module = f"rlport_mutant_{defect}"
    make_distribution(
        root,
        f"rlport-mutant-{defect.replace('_', '-')}",
        "0.0.1",
        modules={f"{module}/__init__.py": SOURCE.replace("@DEFECT@", defect)},
        entry_points={"rlport.plugins": {f"mutant_{defect}": f"{module}:plugin"}},
    )
    return root
