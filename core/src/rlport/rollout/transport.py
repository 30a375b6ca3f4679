"""Weight transports: how the trainer's weights reach a rollout engine after each update.

The ``rlport_weight_transport`` hook resolves one transport per trainer process and engine; the
trainer keeps it and calls :meth:`send` every step. Every transport walks the trainer's
``(name, tensor)`` pairs in buckets of at most ``bucket_bytes`` (:func:`buckets`), so what a
transport holds beside the model is bounded by one bucket, never by the model:

- :class:`InProcessTransport` (the reference, for an engine whose ``update_weights`` takes this
  process's tensors): hands each bucket to ``engine.update_weights``; nothing is copied or written.
- :class:`FileTransport` (the reference, for an engine in another process with no device IPC):
  writes each bucket to a safetensors file (in ``/dev/shm`` when it exists) that the engine's
  worker processes load, then deletes it.
- :class:`DeviceIpcTransport` (for an engine in another process on the same device; a device plugin
  returns it for its torch device type): packs each bucket into one staging buffer on the device
  and sends its handle from torch's own tensor sharing (``torch.multiprocessing.reductions``); the
  engine's workers map the same memory and copy from it, so the weights never cross host memory.

torch is imported only when a bucket is packed.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlport.errors import EngineError

DEFAULT_BUCKET_BYTES = 256 << 20
ALIGN = 64  # staging-buffer offset alignment: every dtype's view of the byte buffer is aligned
FILE_UNPACK = "rlport.rollout.transport:unpack_file"
IPC_UNPACK = "rlport.rollout.transport:unpack_ipc"
SHM = Path("/dev/shm")


def nbytes(tensor: Any) -> int:
    return int(tensor.numel()) * int(tensor.element_size())


def group_key(name: str) -> str:
    """The part of a parameter name that tensors loaded together share: the parent of the leaf
    module (``model.layers.0.self_attn`` for ``model.layers.0.self_attn.q_proj.weight``), so the
    q/k/v or gate/up projections an engine fuses into one module stay in one bucket."""
    parts = name.split(".")
    return ".".join(parts[:-2]) if len(parts) > 2 else parts[0]


def buckets(named_tensors: Iterable[tuple[str, Any]], limit: int) -> Iterator[list[tuple[str, Any]]]:
    """Consecutive ``(name, tensor)`` pairs in lists of at most ``limit`` bytes.

    A run of tensors with the same :func:`group_key` is never split: a group that does not fit
    the current bucket starts the next one, and a group larger than ``limit`` is a bucket of its
    own. Nothing is copied; the pairs are the caller's."""
    if limit < 1:
        raise EngineError(
            f"weight transport: bucket_bytes={limit} (expected >= 1)",
            "use a bucket size of a few MiB or more",
        )
    bucket: list[tuple[str, Any]] = []
    group: list[tuple[str, Any]] = []
    size = group_size = 0
    key = None
    for name, tensor in named_tensors:
        k = group_key(name)
        if k != key and group:
            if bucket and size + group_size > limit:
                yield bucket
                bucket, size = [], 0
            bucket, size = bucket + group, size + group_size
            group, group_size = [], 0
        key = k
        group.append((name, tensor))
        group_size += nbytes(tensor)
    if group:
        if bucket and size + group_size > limit:
            yield bucket
            bucket = []
        bucket += group
    if bucket:
        yield bucket


def host_tensors(items: Iterable[tuple[str, Any]], dtype: Any = None) -> dict[str, Any]:
    """``{name: tensor}`` on the host, contiguous (optionally cast), each with its own storage
    (safetensors refuses tensors that share one)."""
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for name, tensor in items:
        # host-side by design: safetensors files hold host bytes; the pointer read below is of this host copy
        t = tensor.detach().to(device="cpu", dtype=dtype or tensor.dtype).contiguous()
        ptr = t.untyped_storage().data_ptr()
        out[name] = t.clone() if ptr in seen else t
        seen.add(ptr)
    return out


def resolve_unpack(path: str) -> Any:
    """The function a ``module:attr`` path names (run in the engine's worker processes)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _receiver(engine: Any, transport: str) -> Any:
    receive = getattr(engine, "receive_weights", None)
    if receive is None:
        raise EngineError(
            f"weight transport {transport!r} needs an engine whose model lives in worker processes "
            f"(with receive_weights(unpack, payload)); {type(engine).__name__} has none",
            "let the rlport_weight_transport hook choose the transport from the engine's "
            "capabilities['weights_process'] (runtime.weight_transport)",
        )
    return receive


class InProcessTransport:
    """Each bucket straight into ``engine.update_weights``: no file, no copy beyond the engine's."""

    name = "in-process"

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.bucket_bytes = bucket_bytes

    def send(self, engine: Any, named_tensors: Iterable[tuple[str, Any]]) -> None:
        for bucket in buckets(named_tensors, self.bucket_bytes):
            engine.update_weights(bucket)


class FileTransport:
    """One safetensors file per bucket, loaded by the engine's workers, deleted after. The file
    lives in ``folder`` (default ``/dev/shm`` when it exists, so host memory, not disk)."""

    name = "file"

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES, folder: str | Path | None = None) -> None:
        self.bucket_bytes = bucket_bytes
        self.folder = Path(folder) if folder else (SHM if SHM.is_dir() else None)

    def send(self, engine: Any, named_tensors: Iterable[tuple[str, Any]], dtype: Any = None) -> None:
        """``dtype`` (a torch dtype) casts on the way, bucket by bucket."""
        from safetensors.torch import save_file

        receive = _receiver(engine, self.name)
        for bucket in buckets(named_tensors, self.bucket_bytes):
            with tempfile.TemporaryDirectory(prefix="rlport-weights-", dir=self.folder) as tmp:
                path = str(Path(tmp) / "bucket.safetensors")
                save_file(host_tensors(bucket, dtype), path)
                receive(FILE_UNPACK, path)


def unpack_file(path: str) -> list[tuple[str, Any]]:
    """:class:`FileTransport`'s receiving side: the tensors of one bucket file."""
    from safetensors.torch import load_file

    return list(load_file(path).items())


def _align(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def _view(buffer: Any, dtype: str, shape: tuple[int, ...], offset: int) -> Any:
    import torch

    dt = getattr(torch, dtype)
    count = 1
    for dim in shape:
        count *= dim
    size = count * torch.empty((), dtype=dt).element_size()
    return buffer[offset : offset + size].view(dt).view(shape)


def pack_ipc(
    bucket: list[tuple[str, Any]], device_type: str, staging: Any = None, reserve: int = 0
) -> tuple[bytes, Any]:
    """Copy ``bucket`` into one staging buffer on its device and return ``(payload, buffer)``.

    ``payload`` is picklable bytes: the names, dtypes, shapes and offsets, and the buffer's handle
    from :func:`torch.multiprocessing.reductions.reduce_tensor`. ``staging`` (a previous call's
    ``buffer``) is reused when it is large enough and on the same device; a new buffer has at
    least ``reserve`` bytes, so later buckets fit it. The caller keeps
    ``buffer`` alive, and unchanged, until every receiver has copied from it."""
    from multiprocessing.reduction import ForkingPickler

    import torch
    from torch.multiprocessing.reductions import reduce_tensor

    wrong = [f"{n} on {t.device}" for n, t in bucket if t.device.type != device_type]
    if wrong:
        raise EngineError(
            f"{device_type}-ipc weight transport: tensor(s) not on a {device_type!r} device: {wrong[:4]}",
            "send the trainer's parameters where they live, or resolve the transport for the "
            "trainer's device type",
        )
    metas, offset = [], 0
    for name, t in bucket:
        offset = _align(offset)
        metas.append((name, str(t.dtype).removeprefix("torch."), tuple(t.shape), offset))
        offset += nbytes(t)
    where = bucket[0][1].device
    if staging is not None and staging.numel() >= offset and staging.device == where:
        buffer = staging
    else:
        buffer = torch.empty(max(offset, reserve, 1), dtype=torch.uint8, device=where)
        if buffer.device.type == "cpu":
            buffer.share_memory_()  # fill it where the receiver maps it (no second copy at reduce time)
    with torch.no_grad():
        for (_, dtype, shape, off), (_, t) in zip(metas, bucket, strict=True):
            _view(buffer, dtype, shape, off).copy_(t)
    module = getattr(torch, device_type, None)
    synchronize = getattr(module, "synchronize", None)
    if synchronize is not None:  # the receiver reads on its own stream: the copies must be done
        synchronize(buffer.device)
    return bytes(ForkingPickler.dumps((metas, reduce_tensor(buffer)))), buffer


def unpack_ipc(payload: bytes) -> list[tuple[str, Any]]:
    """:class:`DeviceIpcTransport`'s receiving side: views into the sender's staging buffer (valid
    until :meth:`WorkerWeightsEngine.receive_weights` returns; copy them into the model)."""
    import pickle

    metas, (rebuild, args) = pickle.loads(payload)
    buffer = rebuild(*args)
    return [(name, _view(buffer, dtype, tuple(shape), off)) for name, dtype, shape, off in metas]


class DeviceIpcTransport:
    """Buckets through device memory shared with the engine's worker processes.

    Parameterised by the torch device type (``"cuda"`` for the GPU plugins; ``"cpu"`` shares host
    memory the same way, through a shared-memory file descriptor). Per bucket: one staging buffer
    on the trainer's device (the only extra memory), a device ``synchronize``, then the handle from
    torch's ``reduce_tensor``; the engine's workers rebuild the buffer, copy the views into their
    model, and return before the buffer is freed.

    Run here: the whole path with ``device_type="cpu"`` to another process (tests/test_transport.py
    and benchmarks/bench_weight_sync.py). Not run on any GPU: CUDA IPC handles (which also require
    the receiver to see the sender's device under the same index, that is, the same visible-devices
    setting) are only exercised by the GPU plugins' own hardware runs. On CPU each payload can be
    opened by one receiving process (a file descriptor is handed over once), which is what an
    engine with one worker per device needs.
    """

    def __init__(self, device_type: str, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.device_type = device_type
        self.bucket_bytes = bucket_bytes
        self.name = f"{device_type}-ipc"

    def send(self, engine: Any, named_tensors: Iterable[tuple[str, Any]]) -> None:
        receive = _receiver(engine, self.name)
        buffer = None  # one staging buffer for the whole sync, replaced only by a larger bucket
        for bucket in buckets(named_tensors, self.bucket_bytes):
            payload, buffer = pack_ipc(bucket, self.device_type, buffer)
            receive(IPC_UNPACK, payload)
        del buffer
