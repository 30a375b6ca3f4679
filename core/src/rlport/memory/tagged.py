"""Sleep and wake by tag: release the storage of tagged tensors and restore it bit for bit.

Works on any torch device through a :class:`~rlport.types.MemoryBackend`: each storage's bytes are
parked by the backend (host memory, a spill file, ...), then the storage is resized to zero so the
device allocator can reuse it. Waking resizes it back and unparks the bytes. Because the storage
object itself is kept, every tensor, view and tied weight that shares it comes back intact.

A device whose storage cannot be resized (resizing is an optional part of a PrivateUse1 backend)
is served by swapping storages instead: the registered tensors are pointed at an empty storage,
so the old one is freed once nothing else holds it, and at wake at a new storage holding the
parked bytes, each at its old offset, size and stride. Tied weights registered as one tensor come
back tied; a view made outside the registry keeps the old storage (and its memory) alive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from rlport.errors import RlportError
from rlport.types import MemoryBackend


@dataclass
class _Parked:
    storage: torch.UntypedStorage
    nbytes: int
    handle: Any = None
    tensors: list[torch.Tensor] = field(default_factory=list)
    #: where each tensor sat in the storage (offset, size, stride) while it was swapped out
    layout: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    swapped: bool = False

    def release(self) -> None:
        try:
            self.storage.resize_(0)
            return
        except (RuntimeError, NotImplementedError):  # the device cannot resize its storage
            pass
        self.layout = [(t.storage_offset(), tuple(t.shape), tuple(t.stride())) for t in self.tensors]
        for tensor in self.tensors:
            tensor.set_(torch.empty(0, dtype=tensor.dtype, device=tensor.device))
        self.storage = torch.empty(0, dtype=torch.uint8, device=self.storage.device).untyped_storage()
        self.swapped = True

    def restore(self, backend: MemoryBackend) -> None:
        if not self.swapped:
            self.storage.resize_(self.nbytes)
            backend.unpark(self.handle, self.storage)
            return
        fresh = torch.empty(self.nbytes, dtype=torch.uint8, device=self.storage.device).untyped_storage()
        backend.unpark(self.handle, fresh)
        for tensor, (offset, size, stride) in zip(self.tensors, self.layout, strict=True):
            tensor.set_(fresh, offset, size, stride)
        self.storage, self.layout, self.swapped = fresh, [], False


def _tensors(obj: torch.nn.Module | torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        return [*obj.parameters(), *obj.buffers()]
    if isinstance(obj, torch.Tensor):
        return [obj]
    return list(obj)


class TaggedMemory:
    """Tensors registered under tags; :meth:`sleep` and :meth:`wake_up` act on whole tags."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend
        self._storages: dict[str, dict[int, _Parked]] = {}
        self._asleep: set[str] = set()

    def register(self, tag: str, obj: torch.nn.Module | torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Add a module's parameters and buffers, a tensor, or tensors to ``tag``."""
        if tag in self._asleep:
            raise RlportError(
                f"cannot register into tag {tag!r} while it is asleep", f"wake_up({tag!r}) first"
            )
        owned = {key: t for t, storages in self._storages.items() for key in storages if t != tag}
        entries = self._storages.setdefault(tag, {})
        for tensor in _tensors(obj):
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in owned:
                raise RlportError(
                    f"a tensor registered under tag {tag!r} shares storage with tag {owned[key]!r}",
                    "register each storage under one tag only",
                )
            if not storage.resizable():
                raise RlportError(
                    f"a tensor of shape {tuple(tensor.shape)} registered under tag {tag!r} has storage that "
                    "cannot be released (memory-mapped from a file, or shared with numpy)",
                    "copy it into ordinary memory before registering: param.data = param.data.clone()",
                )
            parked = entries.setdefault(key, _Parked(storage, storage.nbytes()))
            if not any(tensor is known for known in parked.tensors):
                parked.tensors.append(tensor)

    @property
    def tags(self) -> list[str]:
        return list(self._storages)

    def is_asleep(self, tag: str) -> bool:
        return tag in self._asleep

    def tagged_bytes(self, *tags: str) -> int:
        return sum(p.nbytes for tag in self._select(tags) for p in self._storages[tag].values())

    def _select(self, tags: tuple[str, ...]) -> list[str]:
        unknown = [t for t in tags if t not in self._storages]
        if unknown:
            raise RlportError(
                f"unknown memory tag(s) {unknown}; registered tags: {self.tags}",
                "register tensors first: tagged_memory().register(tag, module)",
            )
        return list(tags) or self.tags

    def sleep(self, *tags: str) -> int:
        """Park and release every storage of ``tags`` (all tags if none given); return bytes released."""
        released = 0
        for tag in self._select(tags):
            if tag in self._asleep:
                continue
            with torch.no_grad():
                for parked in self._storages[tag].values():
                    parked.handle = self.backend.park(parked.storage)
                    parked.release()
                    released += parked.nbytes
            self._asleep.add(tag)
        self.backend.empty_cache()
        return released

    def wake_up(self, *tags: str) -> None:
        """Reallocate and restore every storage of ``tags`` (all sleeping tags if none given)."""
        for tag in self._select(tags):
            if tag not in self._asleep:
                continue
            with torch.no_grad():
                entries = self._storages[tag]
                for parked in entries.values():
                    parked.restore(self.backend)
                    parked.handle = None
                # a swapped storage is a new object: key each by the storage it now has
                self._storages[tag] = {p.storage._cdata: p for p in entries.values()}
            self._asleep.discard(tag)
