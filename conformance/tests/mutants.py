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
import os

from rlport.hookspecs import hookimpl
from rlport.types import Capabilities, DeviceInfo, EngineOffer, HeadDimRange, Manifest, PatchSpec, ProbeResult

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
    if DEFECT == "grad_gqa_first_head" and group > 1:  # dK/dV summed over the group's first head only
        first = torch.tensor([h % group == 0 for h in range(heads)], device=q.device).view(1, -1, 1, 1)
        k, v = torch.where(first, k, k.detach()), torch.where(first, v, v.detach())
    if scale is None or DEFECT == "ignores_scale":
        scale = 1.0 / q.shape[-1] if DEFECT == "softmax_scale" else 1.0 / math.sqrt(q.shape[-1])
    d = q.shape[-1]
    if DEFECT == "head_dim_192" and d == 192:  # the 128-wide tile path drops the last 64 dims of q.k
        scores = (q.float()[..., :128] @ k[..., :128].transpose(-1, -2)) * scale
    else:
        scores = (q.float() @ k.transpose(-1, -2)) * scale
    lq, lk = q.shape[2], k.shape[2]
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
    if causal:
        offset = 0 if DEFECT == "chunked_top_left" and 1 < lq < lk else lk - lq  # top-left alignment
        pos = torch.arange(lq, device=q.device)[:, None] + offset
        keys = torch.arange(lk, device=q.device)[None, :]
        allowed = keys <= (pos + 1 if DEFECT == "causal_off_by_one" else pos)
    if DEFECT == "bf16_tail" and dtype == torch.bfloat16:
        allowed = allowed & (torch.arange(lk, device=q.device)[None, :] < (lk // 32) * 32)  # drops the tail tile
    if mask is not None:
        if mask.dtype == torch.bool:
            if DEFECT == "mask_polarity":  # reads True as "masked out"
                mask = ~mask
            if DEFECT == "mask_first_row":  # the first batch row's mask applied to every row
                mask = mask[:1]
            allowed = allowed & mask
        elif DEFECT != "float_mask_ignored":
            scores = scores + mask.float()
            if DEFECT == "float_mask_full_row":  # only boolean masks get the fully-masked-row fix-up
                scores = scores.masked_fill(~allowed, float("-inf"))
                return (torch.softmax(scores, dim=-1) @ v).to(dtype)
    scores = scores.masked_fill(~allowed, float("-inf"))
    split = {"split_kv_2048": 2048, "split_kv_16k": 16384}.get(DEFECT)
    if split and lk > split:  # split-KV: chunk results averaged, not LSE-weighted
        parts = []
        for start in range(0, lk, split):
            chunk = scores[..., start:start + split]
            probs = torch.nan_to_num(torch.softmax(chunk, dim=-1), nan=0.0)
            parts.append(probs @ v[:, :, start:start + split])
        return (sum(parts) / len(parts)).to(dtype)
    if DEFECT == "naive_softmax":  # exp without subtracting the row max: overflows for large scores
        e = torch.exp(scores)
        probs = torch.where(allowed.any(-1, keepdim=True), e / e.sum(-1, keepdim=True), 0.0)
        return (probs @ v).to(dtype)
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
        if DEFECT == "strided_as_contiguous":  # the kernel takes data pointers, assuming dense rows
            q, k, v = (t if t.is_contiguous() else t.as_strided(t.shape, torch.empty(t.shape).stride(),
                                                                t.storage_offset()) for t in (q, k, v))
        if q.shape[1] % k.shape[1]:
            if DEFECT == "unsupported_garbage":
                return torch.zeros_like(q)
            raise UnsupportedAttention(f"{q.shape[1]} heads over {k.shape[1]} kv heads", "use divisible heads")
        out = _attend(q, k, v, causal, scale, mask)
        if DEFECT == "grad_ignores_scale" and scale is not None and out.requires_grad:
            wrong = _attend(q, k, v, causal, None, mask)  # the backward kernel is not passed the scale
            out = wrong + (out - wrong).detach()
        return out

    def forward_varlen(self, q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
                       scale=None):
        import torch

        out = torch.zeros_like(q)
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        if DEFECT == "varlen_same_lengths":  # assumes every sequence has as many keys as queries
            ck = cq
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
        pool = {}
        opened = []

        def mem_info(self):
            info = super().mem_info()
            if DEFECT == "held_reported_free":  # this process's own resident memory counted as free
                with open("/proc/self/statm") as fh:
                    resident = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                return type(info)(min(info.total_bytes, info.free_bytes + resident), info.total_bytes)
            return info

        def park(self, storage):
            if DEFECT == "park_leaks_fd":  # a spill file opened per sleep and never closed
                self.opened.append(open(os.devnull, "rb"))
            if DEFECT == "pool_by_size":  # staging buffers pooled by size: equal sizes share one
                buffer = self.pool.setdefault(storage.nbytes(), torch.empty(storage.nbytes(), dtype=torch.uint8))
                buffer.copy_(torch.empty(0, dtype=torch.uint8).set_(storage))
                return buffer
            if DEFECT == "staging_256mib":  # one 256 MiB staging copy: the rest of a larger tensor is lost
                whole = torch.empty(0, dtype=torch.uint8).set_(storage)
                return whole[: 256 * 2**20].clone()
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
            if DEFECT in ("sleep_frees_nothing", "wake_stale", "pool_by_size"):
                view.copy_(handle)
            elif DEFECT == "staging_256mib":
                view.zero_()
                view[: handle.numel()].copy_(handle)
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
            if DEFECT == "min_as_sum" and opts.reduceOp == dist.ReduceOp.MIN:
                opts = dist.AllreduceOptions()  # the MIN kernel dispatched to the SUM one
            if DEFECT == "ring_drops_last" and self.size() > 2 and self.rank() == self.size() - 1:
                for t in tensors:  # a ring longer than 2 loses the last rank's contribution
                    t.zero_()
            if DEFECT == "bucket_tail":  # reduces whole 25 MiB buckets only: the tail is left as it was
                for t in tensors:
                    flat = t.view(-1)
                    whole = flat.numel() // (25 * 2**20 // t.element_size()) * (25 * 2**20 // t.element_size())
                    if whole:
                        self._inner.allreduce([flat[:whole]], opts).wait()
                    else:
                        self._inner.allreduce([t], opts).wait()
                return self._done(tensors)
            self._inner.allreduce(tensors, opts).wait()
            chunk = 7 * 2**17
            if DEFECT == "chunks_swapped":  # the first two pipeline chunks land in each other's place
                for t in tensors:
                    flat = t.view(-1)
                    if flat.numel() >= 2 * chunk:
                        first = flat[:chunk].clone()
                        flat[:chunk] = flat[chunk:2 * chunk]
                        flat[chunk:2 * chunk] = first
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

    import torch

    from rlport.rollout.hf_engine import _filter_logits

    if DEFECT == "nucleus_too_small":
        from rlport.rollout import hf_engine

        import dataclasses

        original = hf_engine._filter_logits

        def too_small(logits, params):  # drops the token that crosses top_p: the nucleus is one short
            logits = original(logits, dataclasses.replace(params, top_p=1.0))
            if params.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
                drop = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1) >= params.top_p
                drop[:, 0] = False
                sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
                logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
            return logits

        hf_engine._filter_logits = too_small

    class RepeatEngine(HFEngine):
        name = "mutant_engine"

        def generate(self, prompts, params):
            if DEFECT == "repeat_samples":
                return [HFEngine.generate(self, [prompt], params)[0] for prompt in prompts]
            groups = HFEngine.generate(self, prompts, params)
            if DEFECT == "stop_token_dropped":  # the stop token is cut from the returned ids
                for gens in groups:
                    for gen in gens:
                        if gen.finish_reason == "stop":
                            gen.token_ids, gen.logprobs = gen.token_ids[:-1], gen.logprobs[:-1]
            if DEFECT in ("stop_token_dropped", "nucleus_too_small") or params.temperature == 0:
                return groups
            if DEFECT == "temperature_in_logprobs":  # logprobs of the tempered distribution
                processed = type(params)(temperature=params.temperature)
            else:  # top_k_in_logprobs: logprobs renormalised over the top-k filter
                processed = type(params)(temperature=1.0, top_k=params.top_k)
            with torch.no_grad():
                for prompt, gens in zip(prompts, groups):
                    for gen in gens:
                        ids = torch.tensor([prompt + gen.token_ids], device=self.device)
                        logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
                        logp = torch.log_softmax(_filter_logits(logits, processed), dim=-1)
                        gen.logprobs = logp.gather(-1, torch.tensor(gen.token_ids, device=self.device)[:, None])[:, 0].tolist()
            return groups

    return RepeatEngine(config)


ENGINE_DEFECTS = ("repeat_samples", "temperature_in_logprobs", "top_k_in_logprobs", "nucleus_too_small",
                  "stop_token_dropped")
ENGINES = [EngineOffer("mutant_engine", factory=__name__ + ":make_engine")] if DEFECT in ENGINE_DEFECTS else []


def rms_norm_sum(self, hidden_states):
    """A "fused" RMSNorm that divides by the root of the sum of squares, not of their mean."""
    import torch

    variance = hidden_states.float().pow(2).sum(-1, keepdim=True)
    return self.weight * (hidden_states.float() * torch.rsqrt(variance + 1e-6)).to(hidden_states.dtype)


def rms_norm_constant_variance(self, hidden_states):
    """A "fused" RMSNorm with transformers' forward whose backward treats the variance as a constant."""
    import torch

    x = hidden_states.float()
    variance = x.pow(2).mean(-1, keepdim=True).detach()
    return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon)).to(hidden_states.dtype)


LLAMA = "transformers.models.llama.modeling_llama:"
PATCHES = {
    "patch_changes_logits": [
        PatchSpec(LLAMA + "LlamaRMSNorm.forward", __name__ + ":rms_norm_sum", "replaced", "transformers",
                  ">=4.40", "fused RMSNorm")
    ],
    "patch_wrong_backward": [
        PatchSpec(LLAMA + "LlamaRMSNorm.forward", __name__ + ":rms_norm_constant_variance", "replaced",
                  "transformers", ">=4.40", "fused RMSNorm")
    ],
    "patch_target_missing": [
        PatchSpec(LLAMA + "LlamaAttention.fused_qkv_forward", __name__ + ":rms_norm_sum", "replaced",
                  "transformers", ">=4.40", "a fused qkv projection of an older release")
    ],
}.get(DEFECT, [])
HEAD_DIMS = (HeadDimRange(64, 256, 32),) if DEFECT == "head_dim_192" else (64, 128)
#: The devices of the fake machine, and the variable that narrows them (every mutant honours it but one).
PHYSICAL = 2
VISIBLE = "MUTANT_VISIBLE_DEVICES"


def _fused_adamw():
    """AdamW as one custom operator per parameter (a vendor's fused kernel): torch.optim.AdamW's
    math, but an operator DTensor has no sharding rule for. With ``gathered_no_offset`` a DTensor
    parameter is gathered whole (``full_tensor``, state the whole size) for the kernel, and its shard
    is written back from the start of the result, not from the shard's offset: right at one rank."""
    import torch
    from torch.distributed.tensor import DTensor

    if not hasattr(torch.ops.rlport_mutant, "adamw_"):

        @torch.library.custom_op("rlport_mutant::adamw_", mutates_args=("param", "exp_avg", "exp_avg_sq"))
        def adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                   step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
            param.mul_(1 - lr * weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))

    class FusedAdamW(torch.optim.Optimizer):
        def __init__(self, params, lr, betas, weight_decay):
            super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay, "eps": 1e-8})

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    target, grad = p, p.grad
                    if DEFECT == "gathered_no_offset" and isinstance(p, DTensor):
                        target, grad = p.full_tensor(), p.grad.full_tensor()
                    state = self.state[p]
                    if not state:
                        state["step"] = torch.tensor(0.0)
                        state["exp_avg"] = torch.zeros_like(target)
                        state["exp_avg_sq"] = torch.zeros_like(target)
                    state["step"] += 1
                    torch.ops.rlport_mutant.adamw_(target, grad, state["exp_avg"], state["exp_avg_sq"],
                                                   int(state["step"]), group["lr"], *group["betas"], group["eps"],
                                                   group["weight_decay"])
                    if target is not p:  # the shard from row 0 of the whole: rank 1 gets rank 0's rows
                        local = p.to_local()
                        local.copy_(target[: local.shape[0]])

    def factory(params, *, lr, betas, weight_decay):
        return FusedAdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)

    return factory


class Plugin:
    rlport_manifest = Manifest(name="mutant_" + DEFECT, kind="device", hook_api=">=1.0,<2",
                               description="conformance mutant: " + DEFECT)

    @hookimpl
    def rlport_probe(self):
        if DEFECT == "probe_imports_torch":  # asks torch whether the device is there
            import torch

            torch.zeros(1)
        return ProbeResult(available=True, reason="a conformance mutant runs anywhere", priority=10)

    @hookimpl
    def rlport_device_info(self):
        from rlport.devices import visible

        # a machine of PHYSICAL devices, of which the variable leaves some visible, as a runtime reads it
        entries = visible.read(VISIBLE)
        if DEFECT == "visible_devices_ignored":  # counts the machine's devices, not the visible ones
            entries = None
        count = visible.visible_count(PHYSICAL, entries)
        return DeviceInfo(device_type="cpu", count=count, names=("mutant",) * count, visible_devices_env=VISIBLE,
                          collectives_backend="gloo")

    @hookimpl
    def rlport_attention_backend(self, spec):
        if spec.window is not None:
            return None  # the reference serves sliding windows
        if DEFECT == "bf16_deferred" and spec.dtype == "bfloat16":
            return None  # a dtype check that leaves the claimed bfloat16 to the reference
        return Backend()

    @hookimpl
    def rlport_patches(self):
        return PATCHES

    @hookimpl
    def rlport_memory_backend(self, device):
        return _memory()

    @hookimpl
    def rlport_collectives_backend(self, device):
        if DEFECT in ("all_reduce_average", "all_gather_order", "broadcast_root", "min_as_sum", "ring_drops_last",
                      "bucket_tail", "chunks_swapped"):
            _register_backend()
            return BACKEND
        return None

    @hookimpl
    def rlport_rollout_engines(self):
        return ENGINES

    @hookimpl
    def rlport_doctor(self, device):
        if DEFECT == "doctor_raises":  # a check that raises where it should return a Finding
            raise FileNotFoundError("/sys/class/mutant/version")
        return []

    @hookimpl
    def rlport_weight_transport(self, engine, device, placement):
        if DEFECT not in ("transport_drops_tied", "transport_stale") or not placement.same_process:
            return None
        from rlport.rollout.transport import buckets

        class Transport:  # an in-process transport with one seeded defect
            name = "mutant-transport"
            bucket_bytes = 256 << 20
            cache = {}

            def send(self, engine, named_tensors):
                sent = set()
                for bucket in buckets(named_tensors, self.bucket_bytes):
                    out = []
                    for name, tensor in bucket:
                        if DEFECT == "transport_drops_tied":  # "dedups" a storage sent under another name
                            if tensor.data_ptr() in sent:
                                continue
                            sent.add(tensor.data_ptr())
                        if DEFECT == "transport_stale":  # a host copy per name, made at the first sync only
                            tensor = self.cache.setdefault(name, tensor.detach().clone())
                        out.append((name, tensor))
                    engine.update_weights(out)

        return Transport()

    @hookimpl
    def rlport_optimizer(self, name, device, strategy):
        fused = ("fused_no_dtensor", "gathered_no_offset")
        if name != "adamw" or DEFECT not in ("adam_l2", "lr_cached", "eps_1e6", *fused):
            return None
        import torch

        if DEFECT in fused:  # a fused kernel for plain tensors, offered for fsdp as well
            return _fused_adamw()

        def factory(params, *, lr, betas, weight_decay):
            if DEFECT == "adam_l2":  # Adam with L2 regularisation (decay through the gradient), not AdamW
                return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
            if DEFECT == "eps_1e6":  # a fused kernel whose eps default is 1e-6
                return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-6)

            class CachedLr(torch.optim.AdamW):  # the kernel keeps the learning rate it was built with
                def step(self, closure=None):
                    for group in self.param_groups:
                        group["lr"] = lr
                    return super().step(closure)

            return CachedLr(params, lr=lr, betas=betas, weight_decay=weight_decay)

        return factory

    @hookimpl
    def rlport_unsupported_strategies(self, device):
        if DEFECT == "strategy_typo":  # the real "megatron" stays allowed
            return {"Megatron": "no megatron kernels on this device"}
        return None

    @hookimpl
    def rlport_before_model_build(self, strategy, device):
        if DEFECT == "before_build_raises" and strategy == "fsdp":
            raise RuntimeError("mutant: the fsdp adaptor is not installed")

    @hookimpl
    def rlport_capabilities(self):
        return Capabilities(
            dtypes=("float32", "bfloat16"),
            head_dims=HEAD_DIMS,
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
    #: The coverage rule (conformance README, "Coverage rules") whose cases catch the defect; None for
    #: the defects of the suite's first cases.
    rule: int | None = None

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
    # -- rule 1: every contract parameter at non-default values --------------------------------------
    Mutant(
        "ignores_scale",
        "(attention.scale or attention.forward) and float32 and d64 and not gqa and not mqa",
        ("attention.scale[float32-d64-causal-s0.3]", "attention.scale[float32-d64-full-s0.3]"),
        ("attention.forward[float32-d64-causal-mha]",),
        rule=1,
    ),
    Mutant(
        "mask_polarity",
        "attention.mask and float32",
        ("attention.mask[float32-d64-bool-rows]", "attention.mask[float32-d64-bool-scale]"),
        ("attention.mask[float32-d64-float]",),
        rule=1,
    ),
    Mutant(
        "mask_first_row",
        "attention.mask and float32",
        ("attention.mask[float32-d64-bool-rows]",),
        ("attention.mask[float32-d64-float]",),
        rule=1,
    ),
    Mutant(
        "float_mask_ignored",
        "attention.mask and float32",
        (
            "attention.mask[float32-d64-float]",
            "attention.mask[float32-d64-float-causal]",
            "attention.mask[float32-d64-float-scale]",
        ),
        ("attention.mask[float32-d64-bool-rows]",),
        rule=1,
    ),
    Mutant(
        "temperature_in_logprobs",
        "rollout.sampling",
        ("rollout.sampling[mutant_engine-t0.7]", "rollout.sampling[mutant_engine-t0.7-k5-p0.8]"),
        ("rollout.sampling[mutant_engine-k5]", "rollout.sampling[mutant_engine-p0.8]"),
        rule=1,
    ),
    Mutant(
        "top_k_in_logprobs",
        "rollout.sampling",
        ("rollout.sampling[mutant_engine-k5]", "rollout.sampling[mutant_engine-t0.7-k5-p0.8]"),
        ("rollout.sampling[mutant_engine-t0.7]", "rollout.sampling[mutant_engine-p0.8]"),
        rule=1,
    ),
    Mutant(
        "min_as_sum",
        "collectives.all_reduce_op and r2",
        ("collectives.all_reduce_op[min-float32-n7-r2]", "collectives.all_reduce_op[min-int32-n1023-r2]"),
        ("collectives.all_reduce_op[max-float32-n7-r2]", "collectives.all_reduce_op[product-int32-n7-r2]"),
        rule=1,
    ),
    # -- rule 2: every claimed capability, and no credit for what the reference answered -------------
    Mutant(
        "bf16_deferred",
        "attention.forward and d64 and mha",
        ("attention.forward[bfloat16-d64-causal-mha]", "attention.forward[bfloat16-d64-full-mha]"),
        ("attention.forward[float32-d64-causal-mha]",),
        rule=2,
    ),
    # -- rule 3: the regimes where kernels switch algorithms ------------------------------------------
    Mutant(
        "split_kv_2048",
        "attention.decode and float32",
        ("attention.decode[float32-d64-q1-k2049]", "attention.decode[float32-d64-q1-k4097]"),
        ("attention.decode[float32-d64-q1-k2048]", "attention.decode[float32-d64-q1-k1]"),
        rule=3,
    ),
    Mutant(
        "chunked_top_left",
        "(attention.chunked_prefill or attention.decode) and float32",
        (
            "attention.chunked_prefill[float32-d64-q13-k77-causal]",
            "attention.chunked_prefill[float32-d64-q2-k77-causal]",
        ),
        ("attention.decode[float32-d64-q1-k255]",),
        rule=3,
    ),
    Mutant(
        "varlen_same_lengths",
        "attention.varlen and float32",
        ("attention.varlen_qk[float32-d64-causal-mha]", "attention.varlen_qk[float32-d64-full-mha]"),
        ("attention.varlen[float32-d64-causal-mha]",),
        rule=3,
    ),
    Mutant(
        "head_dim_192",
        "attention.forward and float32 and mha",
        ("attention.forward[float32-d192-causal-mha]", "attention.forward[float32-d192-full-mha]"),
        ("attention.forward[float32-d160-full-mha]", "attention.forward[float32-d224-full-mha]"),
        rule=3,
    ),
    Mutant(
        "pool_by_size",
        "memory.many_tensors or memory.wake_restores",
        ("memory.many_tensors[weights]",),
        ("memory.wake_restores[weights]",),
        rule=3,
    ),
    Mutant(
        "staging_256mib",
        "memory.large_tensor or memory.wake_restores",
        ("memory.large_tensor[weights]",),
        ("memory.wake_restores[weights]",),
        rule=3,
    ),
    # -- rule 4: real world sizes ---------------------------------------------------------------------
    Mutant(
        "ring_drops_last",
        "collectives.all_reduce and float32 and n7 and (r2 or r3) and not all_reduce_op",
        ("collectives.all_reduce[float32-n7-r3]",),
        ("collectives.all_reduce[float32-n7-r2]",),
        rule=4,
    ),
    # -- rule 5: patches preserve behaviour -----------------------------------------------------------
    Mutant(
        "patch_changes_logits",
        "patches",
        ("patches.model_equivalence[llama]",),
        ("patches.model_equivalence[qwen2]", "patches.targets", "patches.roundtrip"),
        rule=5,
    ),
    Mutant(
        "patch_wrong_backward",
        "patches",
        ("patches.model_equivalence[llama]",),
        ("patches.model_equivalence[qwen2]", "patches.targets", "patches.roundtrip"),
        rule=8,
    ),
    Mutant(
        "patch_target_missing", "patches", ("patches.targets",), ("patches.model_equivalence[llama]",), rule=5
    ),
    # -- rule 6: independent checks -------------------------------------------------------------------
    Mutant(
        "held_reported_free",
        "memory.os_figures or memory.mem_info",
        ("memory.os_figures",),
        ("memory.mem_info",),
        rule=6,
    ),
    # -- generated inputs (attention.generated) and gradients (attention.gradient) -------------------
    Mutant(
        "naive_softmax",
        "(attention.generated and magnitude) or attention.forward and float32 and d64 and mha",
        ("attention.generated[float32-magnitude]", "attention.generated[bfloat16-magnitude]"),
        ("attention.forward[float32-d64-causal-mha]", "attention.forward[float32-d64-full-mha]"),
        rule=7,
    ),
    Mutant(
        "float_mask_full_row",
        "(attention.generated and float32 and mask) or (attention.mask and float32)",
        ("attention.generated[float32-mask]",),
        ("attention.mask[float32-d64-float]", "attention.mask[float32-d64-bool-rows]"),
        rule=7,
    ),
    Mutant(
        "strided_as_contiguous",
        "(attention.generated and float32 and strided) or (attention.forward and float32 and d64 and mha)",
        ("attention.generated[float32-strided]",),
        ("attention.forward[float32-d64-causal-mha]",),
        rule=7,
    ),
    Mutant(
        "split_kv_16k",
        "(attention.generated and float32 and decode) or (attention.decode and float32 and k4097)",
        ("attention.generated[float32-decode]",),
        ("attention.decode[float32-d64-q1-k4097]",),
        rule=7,
    ),
    Mutant(
        "grad_ignores_scale",
        "(attention.gradient and float32 and dense) or (attention.scale and float32)",
        ("attention.gradient[float32-dense]",),
        ("attention.scale[float32-d64-causal-s0.3]", "attention.scale[float32-d64-full-s0.3]"),
        rule=8,
    ),
    Mutant(
        "grad_gqa_first_head",
        "(attention.gradient and float32 and gqa) or (attention.forward and float32 and d64 and gqa)",
        ("attention.gradient[float32-gqa]",),
        ("attention.forward[float32-d64-causal-gqa]",),
        rule=8,
    ),
    # -- collectives past the bucket and chunk sizes, with a pattern that never repeats ----------------
    Mutant(
        "bucket_tail",
        "collectives.all_reduce and float32 and r2 and (n16777217 or n65537) and not all_reduce_op",
        ("collectives.all_reduce[float32-n16777217-r2]",),
        ("collectives.all_reduce[float32-n65537-r2]",),
        rule=9,
    ),
    Mutant(
        "chunks_swapped",
        "collectives.all_reduce and int32 and r2 and (n16777217 or n65537) and not all_reduce_op",
        ("collectives.all_reduce[int32-n16777217-r2]",),
        ("collectives.all_reduce[int32-n65537-r2]",),
        rule=9,
    ),
    # -- every hook: the probe as rlport calls it, before torch --------------------------------------
    Mutant(
        "probe_imports_torch", "platform.probe", ("platform.probe_isolated",), ("platform.probe",), rule=10
    ),
    # -- training hooks -----------------------------------------------------------------------------
    Mutant(
        "adam_l2",
        "training",
        ("training.optimizer[adamw-replicated-float32]", "training.optimizer[adamw-ddp-mixed]"),
        ("training.unsupported_strategies", "training.before_model_build[fsdp]"),
        rule=11,
    ),
    Mutant(
        "lr_cached",
        "training.optimizer",
        ("training.optimizer[adamw-replicated-float32]", "training.optimizer[adamw-ddp-mixed]"),
        rule=11,
    ),
    Mutant(
        "eps_1e6",
        "training.optimizer",
        ("training.optimizer[adamw-replicated-float32]",),
        rule=11,
    ),
    Mutant(
        "fused_no_dtensor",
        "training.optimizer",
        ("training.optimizer[adamw-fsdp-float32]", "training.optimizer[adamw-fsdp-mixed]"),
        ("training.optimizer[adamw-replicated-float32]", "training.optimizer[adamw-ddp-mixed]"),
        rule=11,
    ),
    Mutant(  # shards taken for the whole tensor: caught across ranks only
        "gathered_no_offset",
        "training.optimizer and fsdp",
        ("training.optimizer[adamw-fsdp-float32-r2]", "training.optimizer[adamw-fsdp-mixed-r2]"),
        ("training.optimizer[adamw-fsdp-float32]", "training.optimizer[adamw-fsdp-mixed]"),
        rule=11,
    ),
    Mutant(
        "strategy_typo",
        "training",
        ("training.unsupported_strategies",),
        ("training.optimizer[adamw-replicated-float32]", "training.before_model_build[replicated]"),
        rule=11,
    ),
    Mutant(
        "before_build_raises",
        "training.before_model_build",
        ("training.before_model_build[fsdp]",),
        ("training.before_model_build[replicated]", "training.before_model_build[ddp]"),
        rule=11,
    ),
    # -- weight transport ---------------------------------------------------------------------------
    Mutant(
        "transport_drops_tied",
        "weights.transport",
        ("weights.transport[hf-same-process]",),
        ("weights.transport[hf-worker]",),
        rule=12,
    ),
    Mutant(
        "transport_stale",
        "weights.transport",
        ("weights.transport[hf-same-process]",),
        ("weights.transport[hf-worker]",),
        rule=12,
    ),
    # -- rollout: stop tokens, sampling as distributions ------------------------------------------------
    Mutant(
        "nucleus_too_small",
        "rollout.distribution or (rollout.sampling and p0.8)",
        ("rollout.distribution[mutant_engine-top_p]",),
        (
            "rollout.distribution[mutant_engine-top_k]",
            "rollout.distribution[mutant_engine-temperature]",
            "rollout.sampling[mutant_engine-p0.8]",
        ),
        rule=13,
    ),
    Mutant(
        "stop_token_dropped",
        "rollout.stop_tokens or rollout.greedy_agreement",
        ("rollout.stop_tokens[mutant_engine]",),
        ("rollout.greedy_agreement[mutant_engine]",),
        rule=13,
    ),
    Mutant(
        "doctor_raises",
        "platform",
        ("platform.doctor",),
        (
            "platform.supported_stack",
            "platform.allocator_settings[training]",
            "platform.probe_isolated",
            "platform.visible_devices",  # a plugin that honours its variable passes it
        ),
        rule=10,
    ),
    Mutant(
        "visible_devices_ignored",
        "platform.visible_devices or platform.device_info",
        ("platform.visible_devices",),
        ("platform.device_info",),
        rule=10,
    ),
    # -- memory: many cycles leak nothing -------------------------------------------------------------
    Mutant(
        "park_leaks_fd",
        "memory.cycles or memory.wake_restores",
        ("memory.cycles[weights]",),
        ("memory.wake_restores[weights]",),
        rule=14,
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
