"""Where the workers run on a Ray cluster: placement groups, one bundle per device, packed per node.

``trainer.nnodes`` nodes with ``trainer.n_gpus_per_node`` devices each (verl's keys; the device is
whatever the active device plugin names as its Ray resource, ``DeviceInfo.ray_resource``; none on
the host, where a worker is ``trainer.cpus_per_worker`` CPUs). Each node gets one ``STRICT_PACK``
placement group of ``n_gpus_per_node`` bundles ``{"CPU": cpus_per_worker, <resource>: 1}``; the
groups of different nodes are kept off each other's nodes (a label selector on Ray's node id), and
rank ``r`` runs in bundle ``r % n_gpus_per_node`` of node ``r // n_gpus_per_node``'s group.

Two checks make a start that cannot succeed fail fast, naming what was asked and what the cluster
has: before anything is reserved, whether enough alive nodes could each hold a node's bundles at
all; then a bounded wait (``trainer.startup_timeout_s``) for the groups to be reserved (resources
other jobs hold).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from rlport.errors import RlportError

_NODE_ID = "ray.io/node-id"


@dataclass(frozen=True)
class Request:
    """What a run asks of the cluster."""

    nnodes: int
    per_node: int
    cpus_per_worker: float
    resource: str | None  # the device plugin's Ray resource; None: CPUs only

    def bundle(self) -> dict[str, float]:
        """One device's bundle."""
        out = {"CPU": float(self.cpus_per_worker)}
        if self.resource:
            out[self.resource] = 1.0
        return out

    def node_need(self) -> dict[str, float]:
        """What one node must hold: ``per_node`` bundles."""
        return {k: v * self.per_node for k, v in self.bundle().items()}

    def describe(self) -> str:
        return (
            f"trainer.nnodes={self.nnodes} x trainer.n_gpus_per_node={self.per_node} workers, each "
            f"{_fmt(self.bundle())}, so {self.nnodes} node(s) with {_fmt(self.node_need())} each"
        )


@dataclass
class Placement:
    """The reserved groups; :meth:`options` places rank ``r``."""

    request: Request
    groups: list[Any]
    nodes: list[str] = field(default_factory=list)  # the node id each group landed on

    def options(self, rank: int) -> dict[str, Any]:
        """Ray actor options for rank ``rank``: its resources and its bundle."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        req = self.request
        options: dict[str, Any] = {"num_cpus": req.cpus_per_worker}
        if req.resource == "GPU":
            options["num_gpus"] = 1
        elif req.resource:
            options["resources"] = {req.resource: 1}
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=self.groups[rank // req.per_node],
            placement_group_bundle_index=rank % req.per_node,
        )
        return options

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        for pg in self.groups:
            with contextlib.suppress(Exception):  # the cluster may be gone already
                remove_placement_group(pg)
        self.groups = []


def _fmt(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def cluster_nodes() -> list[dict[str, Any]]:
    """The alive nodes: ``{"id", "address", "resources"}`` (totals, Ray's internal ones left out)."""
    import ray

    out = []
    for n in ray.nodes():
        if not n.get("Alive", n.get("alive", False)):
            continue
        resources = _plain(n.get("Resources") or {})
        out.append({"id": n["NodeID"], "address": n.get("NodeManagerAddress", "?"), "resources": resources})
    return out


def _fits(need: dict[str, float], have: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) >= v for k, v in need.items())


def _cluster_text(nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return "the Ray cluster has no alive node"
    return f"the Ray cluster has {len(nodes)} node(s): " + "; ".join(
        f"{n['address']} ({n['id'][:8]}) {_fmt(n['resources'])}" for n in nodes
    )


def _fix(req: Request) -> str:
    return (
        "add nodes to the cluster (ray start --address=<head-ip>:6379 on each), or ask for less: "
        f"trainer.nnodes / trainer.n_gpus_per_node / trainer.cpus_per_worker (now {req.cpus_per_worker:g})"
    )


def check_feasible(req: Request, nodes: list[dict[str, Any]]) -> None:
    """Fail at once when fewer than ``nnodes`` alive nodes could ever hold a node's bundles."""
    able = [n for n in nodes if _fits(req.node_need(), n["resources"])]
    if len(able) < req.nnodes:
        raise RlportError(
            f"cannot place the workers: {req.describe()}; {len(able)} node(s) are big enough, and "
            + _cluster_text(nodes),
            _fix(req),
        )


def place(req: Request, timeout_s: float) -> Placement:
    """Reserve one placement group per node and wait for them, at most ``timeout_s`` seconds."""
    import time

    import ray
    from ray.util.placement_group import placement_group, placement_group_table

    check_feasible(req, cluster_nodes())
    placement = Placement(req, [])
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(req.nnodes):
            # keep this node's group off the nodes already taken
            selector = [{_NODE_ID: "!in(" + ",".join(placement.nodes) + ")"}] * req.per_node
            pg = placement_group(
                [req.bundle() for _ in range(req.per_node)],
                strategy="STRICT_PACK",
                bundle_label_selector=selector if placement.nodes else None,
            )
            placement.groups.append(pg)
            try:
                ray.get(pg.ready(), timeout=max(0.0, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError as exc:
                raise RlportError(
                    f"cannot place the workers within trainer.startup_timeout_s={timeout_s:g}: "
                    f"{req.describe()}; {len(placement.nodes)} node(s) reserved so far. Available now: "
                    f"{_fmt(_plain(ray.available_resources()))}; " + _cluster_text(cluster_nodes()),
                    _fix(req) + ", or wait for other jobs to release their resources",
                ) from exc
            node = str(next(iter(placement_group_table(pg)["bundles_to_node_id"].values())))
            if node in placement.nodes:  # a Ray that does not honour bundle label selectors
                raise RlportError(
                    f"Ray {ray.__version__} placed two nodes' worker groups on node {node[:8]}: "
                    "trainer.nnodes > 1 needs placement label selectors that Ray honours",
                    'pip install "ray>=2.50"',
                )
            placement.nodes.append(node)
    except BaseException:
        placement.remove()
        raise
    return placement


def _plain(resources: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in resources.items()
        if not k.startswith("node:") and "_group_" not in k and k not in ("memory", "object_store_memory")
    }
