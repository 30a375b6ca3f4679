"""The ``simdev`` torch.distributed backend: collectives on simdev tensors, staged through gloo.

Each collective copies its simdev tensors to host tensors, runs the gloo collective on
them, and copies the results back; host (cpu) tensors go to gloo directly. Everything is
synchronous, so the returned work is already complete.

Usage (after ``import rlport_simdev``)::

    dist.init_process_group("simdev", rank=rank, world_size=n)          # or
    dist.init_process_group("cpu:gloo,simdev:simdev", rank=rank, world_size=n)

Mechanism: torch 2.13's Python binding of ``c10d.Backend`` has no constructor, so a Python
backend must be a ``dist.ProcessGroup`` subclass. ``init_process_group`` then uses that
object as the whole process group (for every device type), which is why host tensors are
served here too (by the gloo group it owns).
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

BACKEND = "simdev"
_SUM = dist.ReduceOp.SUM


def _is_dev(t: torch.Tensor) -> bool:
    return t.device.type == "simdev"


def _stage(t: torch.Tensor) -> torch.Tensor:
    """Host tensor holding t's values (t itself when already on the host)."""
    return t.cpu().contiguous() if _is_dev(t) else t


def _host_like(t: torch.Tensor) -> torch.Tensor:
    """Host tensor to receive t's result (t itself when already on the host)."""
    return torch.empty(t.shape, dtype=t.dtype) if _is_dev(t) else t


def _unstage(t: torch.Tensor, h: torch.Tensor) -> None:
    if h is not t:
        t.copy_(h)


def _is_avg(op) -> bool:
    return op == dist.ReduceOp.AVG


class _DoneWork(dist.Work):
    """A completed work item; its future holds the collective's output tensors."""

    def __init__(self, result: list[torch.Tensor] | None = None):
        super().__init__()
        self._result = result if result is not None else []

    def wait(self, timeout: datetime.timedelta = datetime.timedelta(0)) -> bool:
        return True

    def is_completed(self) -> bool:
        return True

    def is_success(self) -> bool:
        return True

    def get_future(self) -> torch.futures.Future:
        fut: torch.futures.Future = torch.futures.Future()
        fut.set_result(self._result)
        return fut


class SimdevProcessGroup(dist.ProcessGroup):
    """Process group for simdev (and host) tensors; gloo on host copies does the communication."""

    def __init__(self, store, rank: int, world_size: int, timeout: datetime.timedelta):
        super().__init__(rank, world_size)
        self._world = world_size
        self._gloo = dist.ProcessGroupGloo(dist.PrefixStore("simdev-host/", store), rank, world_size, timeout)
        # c10d keeps a group's name in its backends: without one, group_name (which
        # DeviceMesh and FSDP2 read) fails with "ProcessGroup name not set".
        self._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.GLOO, self._gloo)

    def getBackendName(self) -> str:
        return BACKEND

    @property
    def host_group(self):
        """The gloo backend that carries the traffic."""
        return self._gloo

    # reductions ------------------------------------------------------------

    def _reduce_opts(self, opts, cls):
        if not _is_avg(opts.reduceOp):
            return opts, False
        sum_opts = cls()
        sum_opts.reduceOp = _SUM
        sum_opts.timeout = opts.timeout
        return sum_opts, True

    def allreduce(self, tensors, opts=None):
        opts = opts or dist.AllreduceOptions()
        hosts = [_stage(t) for t in tensors]
        gopts, avg = self._reduce_opts(opts, dist.AllreduceOptions)
        self._gloo.allreduce(hosts, gopts).wait()
        for t, h in zip(tensors, hosts, strict=True):
            if avg:
                h.div_(self._world)
            _unstage(t, h)
        return _DoneWork(list(tensors))

    def allreduce_coalesced(self, tensors, opts=None):
        o = dist.AllreduceOptions()
        if opts is not None:
            o.reduceOp = opts.reduceOp
            o.timeout = opts.timeout
        for t in tensors:
            self.allreduce([t], o)
        return _DoneWork(list(tensors))

    def reduce(self, tensors, opts):
        hosts = [_stage(t) for t in tensors]
        gopts, avg = self._reduce_opts(opts, dist.ReduceOptions)
        if avg:
            gopts.rootRank = opts.rootRank
            gopts.rootTensor = opts.rootTensor
        self._gloo.reduce(hosts, gopts).wait()
        if self.rank() == opts.rootRank:
            for t, h in zip(tensors, hosts, strict=True):
                if avg:
                    h.div_(self._world)
                _unstage(t, h)
        return _DoneWork(list(tensors))

    def _reduce_scatter_base(self, output, input, opts=None):
        opts = opts or dist.ReduceScatterOptions()
        out_h, in_h = _host_like(output), _stage(input)
        gopts, avg = self._reduce_opts(opts, dist.ReduceScatterOptions)
        self._gloo._reduce_scatter_base(out_h, in_h, gopts).wait()
        if avg:
            out_h.div_(self._world)
        _unstage(output, out_h)
        return _DoneWork([output])

    def reduce_scatter(self, outputs, input_lists, opts=None):
        opts = opts or dist.ReduceScatterOptions()
        for out, inputs in zip(outputs, input_lists, strict=True):
            self._reduce_scatter_base(out, torch.cat([i.reshape(-1) for i in inputs]), opts)
        return _DoneWork(list(outputs))

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None):
        for out, inp in zip(outputs, inputs, strict=True):
            self._reduce_scatter_base(out, inp, opts)
        return _DoneWork(list(outputs))

    # gathers and broadcasts ------------------------------------------------

    def _allgather_base(self, output, input, opts=None):
        opts = opts or dist.AllgatherOptions()
        out_h = _host_like(output)
        self._gloo._allgather_base(out_h, _stage(input), opts).wait()
        _unstage(output, out_h)
        return _DoneWork([output])

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None):
        for out, inp in zip(outputs, inputs, strict=True):
            self._allgather_base(out, inp, opts)
        return _DoneWork(list(outputs))

    def _gather_lists(self, call, output_lists, inputs, opts):
        outs_h = [[_host_like(o) for o in outs] for outs in output_lists]
        call(outs_h, [_stage(i) for i in inputs], opts).wait()
        for outs, hs in zip(output_lists, outs_h, strict=True):
            for o, h in zip(outs, hs, strict=True):
                _unstage(o, h)
        return _DoneWork([o for outs in output_lists for o in outs])

    def allgather(self, output_lists, inputs, opts=None):
        return self._gather_lists(self._gloo.allgather, output_lists, inputs, opts or dist.AllgatherOptions())

    def allgather_coalesced(self, output_lists, inputs, opts=None):
        return self.allgather(output_lists, inputs, opts)

    def gather(self, output_lists, inputs, opts):
        return self._gather_lists(self._gloo.gather, output_lists, inputs, opts)

    def scatter(self, outputs, input_lists, opts):
        outs_h = [_host_like(o) for o in outputs]
        ins_h = [[_stage(i) for i in ins] for ins in input_lists]
        self._gloo.scatter(outs_h, ins_h, opts).wait()
        for o, h in zip(outputs, outs_h, strict=True):
            _unstage(o, h)
        return _DoneWork(list(outputs))

    def broadcast(self, tensors, opts=None):
        opts = opts or dist.BroadcastOptions()
        hosts = [_stage(t) for t in tensors]
        self._gloo.broadcast(hosts, opts).wait()
        for t, h in zip(tensors, hosts, strict=True):
            _unstage(t, h)
        return _DoneWork(list(tensors))

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        opts = opts or dist.AllToAllOptions()
        out_h = _host_like(output)
        self._gloo.alltoall_base(out_h, _stage(input), output_split_sizes, input_split_sizes, opts).wait()
        _unstage(output, out_h)
        return _DoneWork([output])

    def send(self, tensors, dst, tag=0):
        self._gloo.send([_stage(t) for t in tensors], dst, tag).wait()
        return _DoneWork(list(tensors))

    def recv(self, tensors, src, tag=0):
        hosts = [_host_like(t) for t in tensors]
        self._gloo.recv(hosts, src, tag).wait()
        for t, h in zip(tensors, hosts, strict=True):
            _unstage(t, h)
        return _DoneWork(list(tensors))

    def barrier(self, opts=None):
        self._gloo.barrier(opts or dist.BarrierOptions()).wait()
        return _DoneWork()

    # torch 2.13's Python front end calls these names on the group object
    all_gather_single = _allgather_base
    reduce_scatter_single = _reduce_scatter_base
    all_gather_single_coalesced = allgather_into_tensor_coalesced
    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced
    all_to_all_single = alltoall_base


def _create(store, rank, world_size, timeout):
    return SimdevProcessGroup(store, rank, world_size, timeout)


def register() -> None:
    """Register the ``simdev`` backend with torch.distributed (idempotent)."""
    if not dist.is_available():
        return
    if BACKEND.upper() in dist.Backend._plugins:
        return
    dist.Backend.register_backend(BACKEND, _create, devices=["simdev"])
