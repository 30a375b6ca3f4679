"""Weight transports: what the engine serves after a sync equals the trainer's weights (hashes),
buckets stay bounded (sizes recorded and peak extra host memory measured), the hook resolves the
transport once, and the device-IPC transport works across processes (on CPU, where torch shares
tensors through shared memory the way it shares device memory through IPC handles)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from plugin_sources import device
from rich.console import Console

import rlport
from rlport.errors import EngineError
from rlport.memory.peak import HostPeak
from rlport.rollout.process_receiver import ProcessReceiver, digests
from rlport.rollout.transport import (
    DeviceIpcTransport,
    FileTransport,
    InProcessTransport,
    buckets,
    nbytes,
    pack_ipc,
    resolve_unpack,
)
from rlport.testing import make_plugin
from rlport.types import EnginePlacement

MiB = 1 << 20


def layered(layers: int, width: int, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Qwen-style parameter names: per layer an attention block (q/k/v/o) and an MLP."""
    g = torch.Generator().manual_seed(seed)
    named = [("model.embed_tokens.weight", torch.randn(64, width, generator=g))]
    for i in range(layers):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            named.append(
                (f"model.layers.{i}.self_attn.{part}.weight", torch.randn(width, width, generator=g))
            )
        named.append((f"model.layers.{i}.self_attn.q_proj.bias", torch.randn(width, generator=g)))
        for part in ("gate_proj", "up_proj"):
            named.append((f"model.layers.{i}.mlp.{part}.weight", torch.randn(width, width, generator=g)))
    named.append(("model.norm.weight", torch.randn(width, generator=g)))
    named.append(("lm_head.weight", torch.randn(64, width, generator=g)))
    return named


class RecordingEngine:
    """An engine in this process: records each update_weights bucket's bytes and copies the
    tensors into its weights (preallocated like a real engine's when ``like`` is given)."""

    def __init__(self, like: Iterable[tuple[str, torch.Tensor]] = ()) -> None:
        self.state = {n: torch.zeros_like(t) for n, t in like}
        self.bucket_bytes: list[int] = []

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        items = list(named_tensors)
        self.bucket_bytes.append(sum(nbytes(t) for _, t in items))
        for name, t in items:
            if name in self.state:
                self.state[name].copy_(t)
            else:
                self.state[name] = t.detach().clone()


class WorkerEngine(RecordingEngine):
    """An engine reached through receive_weights (as vLLM's is): unpacks in this process."""

    def __init__(self, like: Iterable[tuple[str, torch.Tensor]] = ()) -> None:
        super().__init__(like)
        self.payload_bytes: list[int] = []

    def receive_weights(self, unpack: str, payload: Any) -> None:
        size = os.path.getsize(payload) if isinstance(payload, str) else len(payload)
        self.payload_bytes.append(size)
        self.update_weights(resolve_unpack(unpack)(payload))


# -- buckets --------------------------------------------------------------------------------------


def test_buckets_are_bounded_keep_order_and_never_split_a_module_group() -> None:
    named = layered(layers=6, width=64)
    limit = 3 * 64 * 64 * 4  # three projections
    out = list(buckets(iter(named), limit))
    assert [n for b in out for n, _ in b] == [n for n, _ in named]
    assert len(out) > 6
    for bucket in out:
        groups = {n.rsplit(".", 2)[0] for n, _ in bucket}
        assert sum(nbytes(t) for _, t in bucket) <= limit or len(groups) == 1, groups
    where = {n: i for i, b in enumerate(out) for n, _ in b}
    for i in range(6):
        attn = {where[f"model.layers.{i}.self_attn.{p}_proj.weight"] for p in "qkvo"}
        assert len(attn) == 1 and where[f"model.layers.{i}.self_attn.q_proj.bias"] in attn


def test_bucket_size_below_one_is_refused() -> None:
    with pytest.raises(EngineError, match="bucket_bytes=0"):
        list(buckets(layered(1, 8), 0))


# -- in process and file --------------------------------------------------------------------------


def test_in_process_transport_hands_over_bounded_buckets_and_the_engine_serves_them() -> None:
    named = layered(layers=4, width=128)
    engine = RecordingEngine()
    InProcessTransport(bucket_bytes=2 * 128 * 128 * 4).send(engine, iter(named))
    assert digests(engine.state.items()) == digests(named)
    assert len(engine.bucket_bytes) > 4 and max(engine.bucket_bytes) <= 4 * 128 * 128 * 4 + 128 * 4


def test_file_transport_writes_one_bounded_file_per_bucket_and_deletes_it(tmp_path: Path) -> None:
    named = layered(layers=4, width=128)
    engine = WorkerEngine()
    limit = 2 * 128 * 128 * 4
    FileTransport(bucket_bytes=limit, folder=tmp_path).send(engine, iter(named))
    assert digests(engine.state.items()) == digests(named)
    model = sum(nbytes(t) for _, t in named)
    assert len(engine.payload_bytes) > 4
    assert max(engine.payload_bytes) < 4 * 128 * 128 * 4 + 64 * 1024 < model  # data + header
    assert list(tmp_path.iterdir()) == []


def test_file_transport_needs_an_engine_with_receive_weights() -> None:
    with pytest.raises(EngineError, match="receive_weights"):
        FileTransport().send(RecordingEngine(), iter(layered(1, 8)))


def test_hf_engine_serves_the_trainer_weights_after_a_sync(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from rlport.rollout import EngineConfig
    from rlport.rollout.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "m", vocab=None, hidden_size=64, heads=2, kv_heads=1, seed=3)
    rt = rlport.init()
    engine = rt.make_engine("hf", EngineConfig(model=str(folder)))
    trainer = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in trainer.parameters():
            p.mul_(1.5).add_(0.01)
    trained = digests(trainer.named_parameters())
    assert digests(engine.model.named_parameters()) != trained
    placement = EnginePlacement(same_process=engine.capabilities["weights_process"] != "worker")
    transport = rt.weight_transport("hf", placement)
    assert isinstance(transport, InProcessTransport)
    transport.send(engine, ((n, p.detach()) for n, p in trainer.named_parameters()))
    assert digests(engine.model.named_parameters()) == trained
    engine.shutdown()


def test_reference_resolves_file_for_worker_engines_once_per_engine_and_placement() -> None:
    rt = rlport.init()
    remote = rt.weight_transport("vllm", EnginePlacement(same_process=False))
    assert isinstance(remote, FileTransport)
    assert rt.weight_transport("vllm", EnginePlacement(same_process=False)) is remote
    assert isinstance(rt.weight_transport("hf", EnginePlacement(same_process=True)), InProcessTransport)


# -- device IPC, across processes ------------------------------------------------------------------


@pytest.fixture
def big() -> Iterator[list[tuple[str, torch.Tensor]]]:
    named = layered(layers=8, width=512, seed=5)  # about 17 MiB in 58 tensors, bf16 and fp32 mixed
    named = [(n, t.to(torch.bfloat16) if "mlp" in n else t) for n, t in named]
    yield named


def test_device_ipc_on_cpu_reaches_another_process_exactly_and_bounded(big: list) -> None:
    engine = ProcessReceiver(big)
    limit = 2 * MiB
    model = sum(nbytes(t) for _, t in big)
    with HostPeak() as peak:
        DeviceIpcTransport("cpu", bucket_bytes=limit).send(engine, iter(big))
    assert engine.digests() == digests(big)
    assert len(engine.payload_bytes) >= model // (2 * limit)
    assert max(engine.payload_bytes) < 64 * 1024  # handles and metadata only, never the weights
    if HostPeak.available():  # one staging buffer (a group may exceed the bound), never the model
        assert peak.extra_bytes < 3 * limit + 2 * MiB < model, (peak.extra_bytes, model)
        assert engine.peak_extra_bytes < 2 * MiB  # the receiver copies from shared memory


def test_whole_model_file_costs_the_model_in_host_memory(big: list, tmp_path: Path) -> None:
    """The measurement above can fail: the same meter sees today's whole-model file path."""
    if not HostPeak.available():
        pytest.skip("needs /proc")
    engine = WorkerEngine(like=big)
    model = sum(nbytes(t) for _, t in big)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    with HostPeak() as peak:
        FileTransport(bucket_bytes=10 * model, folder=shm).send(engine, iter(big))
    assert digests(engine.state.items()) == digests(big)
    assert peak.extra_bytes > model  # the file, then the tensors loaded from it


def test_file_buckets_bound_host_memory_in_process(big: list, tmp_path: Path) -> None:
    if not HostPeak.available():
        pytest.skip("needs /proc")
    engine = WorkerEngine(like=big)
    limit = 2 * MiB
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    with HostPeak() as peak:
        FileTransport(bucket_bytes=limit, folder=shm).send(engine, iter(big))
    assert digests(engine.state.items()) == digests(big)
    assert peak.extra_bytes < 2 * (3 * limit) + 2 * MiB, peak.extra_bytes


def test_device_ipc_refuses_a_tensor_on_another_device() -> None:
    with pytest.raises(EngineError, match=r"not on a 'cuda' device.*model\.norm\.weight"):
        pack_ipc([("model.norm.weight", torch.ones(4))], "cuda")


def test_device_ipc_synchronizes_the_device_module_before_handing_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(torch.cpu, "synchronize", lambda device=None: calls.append(device))
    payload, buffer = pack_ipc([("a.b.weight", torch.arange(6.0).view(2, 3))], "cpu")
    assert calls == [buffer.device] and buffer.is_shared() and isinstance(payload, bytes)


# -- a plugin's transport, resolved once for a whole run -------------------------------------------

COUNTING = """
from rlport.rollout.transport import InProcessTransport

CALLS = []


class Counting(InProcessTransport):
    name = "counting"
    sends = 0

    def send(self, engine, named_tensors):
        type(self).sends += 1
        super().send(engine, named_tensors)
"""

HOOK = """
    @rlport.hookimpl
    def rlport_weight_transport(self, engine, device, placement):
        CALLS.append((engine, placement))
        return Counting(bucket_bytes=1 << 16)
"""


def test_plugin_transport_is_resolved_once_used_every_step_and_summarised(site: Path, tmp_path: Path) -> None:
    import sys

    from rlport.summary import collect
    from rlport.train.cli import build_config
    from rlport.train.driver.trainer import Trainer

    make_plugin(site, "xport", COUNTING + device("xport", body=HOOK))
    rt = rlport.init()
    assert rt.device_plugin == "xport"
    cfg = build_config(
        [
            "trainer.progress=false",
            "data.train_batch_size=4",
            "rollout.n=2",
            "rollout.max_new_tokens=4",
            "actor.mini_batches=1",
            "trainer.steps=3",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    Trainer(cfg, console=Console(file=io.StringIO(), width=200)).fit()
    module = sys.modules["rlport_xport"]
    assert [("hf", EnginePlacement(same_process=True))] == module.CALLS
    assert module.Counting.sends == 3
    served = {h["hook"]: h["served_by"] for h in collect(rt)["hooks"]}
    assert served["rlport_weight_transport"] == "xport"
