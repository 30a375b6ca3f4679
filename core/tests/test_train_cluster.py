"""Ray placement and a two-node cluster simulated on this machine.

``ray.cluster_utils.Cluster`` starts two real raylets here (a head and one more node, one CPU
each), so ``trainer.nnodes=2`` has two nodes to spread over: the demo trains 2 steps with one
worker per node, every worker resolves the driver's device plugin, and the startup summary prints
once. Asking for more than the cluster has fails fast, naming what was asked and what is there.
This is a simulation: both nodes share one machine, one file system and one address; a cluster of
real machines has not been run.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rlport.errors import ConfigError, RlportError
from rlport.train.cli import build_config
from rlport.train.driver.trainer import Trainer
from rlport.train.workers import placement
from rlport.train.workers.group import WorkerGroup

TINY = [
    "trainer.progress=false",
    "data.train_batch_size=4",
    "rollout.n=4",
    "rollout.max_new_tokens=4",
    "trainer.steps=2",
    "trainer.cpus_per_worker=1",
]


def _console() -> Console:
    return Console(file=io.StringIO(), width=200)


def _node(i: int, **resources: float) -> dict[str, Any]:
    return {"id": f"{i:02d}" * 20, "address": f"10.0.0.{i}", "resources": resources}


def test_a_cluster_too_small_is_refused_naming_both_sides() -> None:
    req = placement.Request(nnodes=2, per_node=4, cpus_per_worker=2, resource="GPU")
    assert req.bundle() == {"CPU": 2.0, "GPU": 1.0} and req.node_need() == {"CPU": 8.0, "GPU": 4.0}
    big, small = _node(1, CPU=16, GPU=8), _node(2, CPU=16, GPU=2)
    placement.check_feasible(req, [big, _node(3, CPU=8, GPU=4)])  # two nodes that fit: no error
    with pytest.raises(RlportError) as err:
        placement.check_feasible(req, [big, small])
    msg = err.value.message
    assert "trainer.nnodes=2 x trainer.n_gpus_per_node=4 workers, each {CPU: 2, GPU: 1}" in msg
    assert "so 2 node(s) with {CPU: 8, GPU: 4} each; 1 node(s) are big enough" in msg
    assert "the Ray cluster has 2 node(s): 10.0.0.1 (01010101) {CPU: 16, GPU: 8}; 10.0.0.2" in msg
    assert "ray start --address=<head-ip>:6379" in err.value.fix
    cpu_only = placement.Request(nnodes=1, per_node=2, cpus_per_worker=1, resource=None)
    assert cpu_only.bundle() == {"CPU": 1.0}


def test_a_worker_resolving_another_plugin_is_refused() -> None:
    from types import SimpleNamespace

    pool = WorkerGroup.__new__(WorkerGroup)
    pool.where = ["10.0.0.1 (node 01010101)", "10.0.0.2 (node 02020202)"]
    rt = SimpleNamespace(device_plugin="cpu", collectives_backend="gloo")
    same = {"device_plugin": "cpu", "collectives_backend": "gloo"}
    pool._check_plugins([{"rank": 0, **same}, {"rank": 1, **same}], rt)
    other = {"rank": 1, "device_plugin": "cuda", "collectives_backend": "nccl"}
    with pytest.raises(RlportError) as err:
        pool._check_plugins([{"rank": 0, **same}, other], rt)
    assert err.value.message == (
        "worker rank 1 on 10.0.0.2 (node 02020202) resolved device plugin 'cuda' with collectives 'nccl', "
        "the driver 'cpu' with 'gloo'"
    )
    assert "install the same rlport plugins on every node" in err.value.fix


def test_a_worker_error_is_named_with_its_rank_node_and_step() -> None:
    """What Ray hands the driver when a worker raises: its exception as ``cause``."""
    from types import SimpleNamespace

    from rlport.errors import WorkerError

    pool = WorkerGroup.__new__(WorkerGroup)
    pool.where, pool.step = ["10.0.0.1 (node 01010101)", "10.0.0.2 (node 02020202)"], 7
    wrapped = SimpleNamespace(cause=RlportError("preflight all_reduce exact failed", "rlport doctor"))
    err = pool._raised(1, "train", wrapped)  # type: ignore[arg-type]
    assert isinstance(err, WorkerError) and (err.rank, err.step) == (1, 7)
    assert err.message == (
        "worker rank 1 on 10.0.0.2 (node 02020202) failed during 'train' of step 7: "
        "preflight all_reduce exact failed"
    )
    assert err.fix == "rlport doctor"
    pool.step = None
    err = pool._raised(0, "build", ValueError("bad shape"))
    assert err.message.endswith("failed during 'build' while starting: ValueError: bad shape")


def test_verl_devices_per_node_set_the_workers() -> None:
    """verl counts devices per node; rlport's trainer.workers follows unless given otherwise."""
    cfg = build_config(
        ["data.train_batch_size=24", "trainer.nnodes=2", "trainer.n_gpus_per_node=3"], demo=False
    )
    assert cfg.trainer.workers == 6


@pytest.mark.parametrize(
    ("extra", "message", "fix"),
    [
        (["trainer.nnodes=0"], "'trainer.nnodes' is 0; expected at least 1", "trainer.nnodes=1"),
        (["trainer.workers=4", "trainer.nnodes=3"], "a multiple of trainer.nnodes (3)", "trainer.workers=3"),
        (
            ["trainer.workers=4", "trainer.nnodes=2", "trainer.n_gpus_per_node=4"],
            "trainer.nnodes x trainer.n_gpus_per_node = 8",
            "trainer.workers=8",
        ),
        (["trainer.n_gpus_per_node=-1"], "'trainer.n_gpus_per_node' is -1", "trainer.n_gpus_per_node=0"),
        (
            ["trainer.startup_timeout_s=0"],
            "'trainer.startup_timeout_s' is 0",
            "trainer.startup_timeout_s=120",
        ),
    ],
)
def test_node_keys_are_range_checked(extra: list[str], message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(["data.train_batch_size=24", *extra], demo=False)
    assert message in err.value.message and fix in err.value.fix


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _node_ids(address: str) -> set[str]:
    import ray

    ray.init(address=address)
    try:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()


def test_two_nodes_train_and_print_the_summary_once(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RLPORT_SUMMARY", "1")
    nodes = _node_ids(cluster.address)
    assert len(nodes) == 2
    cfg = build_config(
        [
            *TINY,
            "trainer.workers=2",
            "trainer.nnodes=2",
            f"trainer.ray_address={cluster.address}",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    trainer = Trainer(cfg, console=_console())
    res = trainer.fit()
    time.sleep(1.0)  # Ray forwards the workers' output asynchronously
    out = capfd.readouterr()
    # one worker per node, both nodes used, each resolving what the driver resolved
    assert sorted(w["rank"] for w in res.workers) == [0, 1]
    assert {w["node_id"] for w in res.workers} == nodes
    driver = (trainer.rt.device_plugin, trainer.rt.collectives_backend)
    assert all((w["device_plugin"], w["collectives_backend"]) == driver for w in res.workers), res.workers
    assert [h["workers/weights_in_sync"] for h in res.history] == [1.0, 1.0]
    assert [h["step"] for h in res.history] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "step_2" / "trainer_state.json").is_file()
    text = out.out + out.err
    assert text.count("chosen because:") == 1, text[-3000:]


def test_more_nodes_than_the_cluster_has_fail_fast(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = build_config(
        [
            *TINY,
            "data.train_batch_size=6",
            "trainer.workers=3",
            "trainer.nnodes=3",
            f"trainer.ray_address={cluster.address}",
            f"trainer.output_dir={tmp_path / 'run'}",
        ],
        demo=True,
    )
    t0 = time.monotonic()
    with pytest.raises(RlportError) as err:
        Trainer(cfg, console=_console()).fit()
    assert time.monotonic() - t0 < 60  # no 300 s rendezvous wait: the placement refuses at once
    assert "trainer.nnodes=3 x trainer.n_gpus_per_node=1 workers, each {CPU: 1}" in err.value.message
    assert "2 node(s) are big enough, and the Ray cluster has 2 node(s)" in err.value.message


def test_resources_held_elsewhere_fail_after_a_bounded_wait(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address=cluster.address)
    blocker = placement_group([{"CPU": 1}], strategy="STRICT_PACK")  # another job holds one node's CPU
    try:
        ray.get(blocker.ready(), timeout=60)
        cfg = build_config(
            [
                *TINY,
                "trainer.workers=2",
                "trainer.nnodes=2",
                "trainer.startup_timeout_s=3",
                f"trainer.output_dir={tmp_path / 'run'}",
            ],
            demo=True,
        )
        t0 = time.monotonic()
        with pytest.raises(RlportError) as err:
            Trainer(cfg, console=_console()).fit()
        assert time.monotonic() - t0 < 60
        assert "cannot place the workers within trainer.startup_timeout_s=3" in err.value.message
        assert "1 node(s) reserved so far" in err.value.message
        assert "wait for other jobs" in err.value.fix
        deadline = time.monotonic() + 30  # what the failed start reserved is given back
        while ray.available_resources().get("CPU", 0) != 1.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 1.0
    finally:
        remove_placement_group(blocker)
        ray.shutdown()


def test_a_run_starts_its_own_ray_unless_a_cluster_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``ray start`` cluster on the machine made a plain ``ray.init(num_cpus=...)`` join it and
    fail after the run had started ("When connecting to an existing cluster, num_cpus and num_gpus
    must not be provided"): without an address the trainer asks for a new local Ray; with one
    (``trainer.ray_address`` or Ray's own ``RAY_ADDRESS``) it joins and leaves the CPUs to it."""
    from rlport.train.workers.group import ray_init_options

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    own = ray_init_options("", 3)
    assert own["address"] == "local" and own["num_cpus"] == 3
    assert ray_init_options("", 0)["num_cpus"] >= 1
    joined = ray_init_options("10.0.0.1:6379", 3)
    assert joined["address"] == "10.0.0.1:6379" and "num_cpus" not in joined
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert ray_init_options("", 3) == {"include_dashboard": False, "log_to_driver": True, "address": "auto"}
