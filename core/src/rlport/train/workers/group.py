"""The workers of a run as one group, whether local objects or Ray actors: placed, checked, joined
and built; called together; a failure attributed to its rank and node; and replicas compared.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlport.errors import RlportError, WorkerError
from rlport.train import checkpoint
from rlport.train.config.schema import TrainConfig


def first_drift(per_rank: list[dict[str, float]]) -> str:
    """The first weight whose fingerprint differs between ranks (beyond float64 summation order),
    with each rank's value; "" when all agree."""
    for name, ref in per_rank[0].items():
        values = [sums.get(name, float("nan")) for sums in per_rank]
        if not all(abs(v - ref) <= 1e-6 * max(1.0, abs(ref)) for v in values):
            shown = ", ".join(f"rank {r}: {v:.9g}" for r, v in enumerate(values))
            return f"{name} (sum of its elements: {shown})"
    return ""


def ray_init_options(address: str, num_cpus: int) -> dict[str, Any]:
    """``ray.init``'s arguments: the cluster at ``trainer.ray_address`` (or ``RAY_ADDRESS``, as Ray
    reads it) when one is named; else a new local Ray of ``num_cpus`` CPUs (0: the machine's), even
    when a cluster started by ``ray start`` runs on this machine, which a plain ``ray.init()`` would
    join and then refuse ``num_cpus``."""
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    named = address or os.environ.get("RAY_ADDRESS", "")
    if named:
        options["address"] = named
    else:
        options["address"] = "local"
        options["num_cpus"] = num_cpus or os.cpu_count() or 1
    return options


class WorkerGroup:
    """The workers, behind one interface whether they are local objects or Ray actors.

    On Ray the workers are placed first (:mod:`rlport.train.workers.placement`: placement groups, failing
    fast when the cluster cannot hold them), then checked to resolve the driver's device plugin,
    then joined in one process group on a store rank 0 keeps bound (:mod:`rlport.train.workers.rendezvous`),
    then built. A worker that dies, or raises, ends the call at once with a :class:`WorkerError`
    naming its rank, its node and ``step`` (set by the trainer), without waiting on the others
    (they may be blocked in a collective with the dead one)."""

    def __init__(self, cfg: TrainConfig, actor_path: str, resume_from: str | None, rt: Any) -> None:
        self.cfg = cfg
        self.world = cfg.trainer.workers
        self.ray = self.world > 1
        self.step: int | None = None
        self.failed = False
        self.where = ["this process"]
        self.placement: Any = None
        self._started_ray = False
        self.workers: list[Any] = []
        if not self.ray:
            from rlport.train.workers.worker import Worker

            worker = Worker(cfg, actor_path=actor_path, resume_from=resume_from)
            worker.build()
            self.workers = [worker]
            return
        try:
            self._start_ray(cfg, actor_path, resume_from, rt)
        except BaseException:
            self.failed = True
            self.close()
            raise

    def _start_ray(self, cfg: TrainConfig, actor_path: str, resume_from: str | None, rt: Any) -> None:
        import ray

        from rlport.train.workers import placement
        from rlport.train.workers.worker import ray_worker_class

        t = cfg.trainer
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(**ray_init_options(t.ray_address, t.ray_num_cpus))
            self._started_ray = True
        env = {k: v for k, v in os.environ.items() if k.startswith("RLPORT_")}
        env.update({k: v for k, v in rt.worker_env.items() if k not in env})
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        request = placement.Request(
            nnodes=t.nnodes,
            per_node=t.n_gpus_per_node or self.world // t.nnodes,
            cpus_per_worker=t.cpus_per_worker,
            resource=rt.device.ray_resource,
        )
        self.placement = placement.place(request, t.startup_timeout_s)
        addresses = {n["id"]: n["address"] for n in placement.cluster_nodes()}
        self.where = [
            f"{addresses.get(node, '?')} (node {node[:8]})"
            for node in self.placement.nodes
            for _ in range(request.per_node)
        ]
        cls = ray_worker_class()
        per_rank = [dict(env) for _ in range(self.world)]
        if rt.device.ray_resource is None and rt.device.device_type != "cpu":
            # Ray narrows no visible-devices variable for a device it has no resource for: each
            # rank sees every device and takes the one of its place on the node
            # (Runtime.torch_device reads LOCAL_RANK, as torch's DeviceMesh does)
            for r, rank_env in enumerate(per_rank):
                rank_env["LOCAL_RANK"] = str(r % request.per_node)
        self.workers = [
            cls.options(**self.placement.options(r), runtime_env={"env_vars": per_rank[r]}).remote(
                cfg, rank=r, world=self.world, actor_path=actor_path, resume_from=resume_from
            )
            for r in range(self.world)
        ]
        self._check_plugins(self.call("identity"), rt)
        # rank 0 opens the store and keeps its port bound; the others connect to it
        host, port = self.gather("host_rendezvous", [self.workers[0].host_rendezvous.remote()])[0]
        self.call("join_group", [(host, port)] * self.world)
        self.call("build")  # sharded strategies need the group

    def _check_plugins(self, identities: list[dict[str, Any]], rt: Any) -> None:
        """Every worker must resolve the driver's device plugin and collectives backend."""
        want = (rt.device_plugin, rt.collectives_backend)
        for i in identities:
            got = (i["device_plugin"], i["collectives_backend"])
            if got != want:
                raise RlportError(
                    f"worker rank {i['rank']} on {self.where[i['rank']]} resolved device plugin {got[0]!r} "
                    f"with collectives {got[1]!r}, the driver {want[0]!r} with {want[1]!r}",
                    "install the same rlport plugins on every node (`rlport plugins` there lists them), "
                    "with the same RLPORT_* settings",
                )

    def call(self, method: str, args_per_worker: list[tuple[Any, ...]] | None = None) -> list[Any]:
        args_per_worker = args_per_worker or [() for _ in self.workers]
        if not self.ray:
            return [getattr(w, method)(*a) for w, a in zip(self.workers, args_per_worker, strict=True)]
        return self.gather(method, self.submit(method, args_per_worker))

    def submit(self, method: str, args_per_worker: list[tuple[Any, ...]]) -> list[Any]:
        """Start ``method`` on every worker; the results' references, in rank order."""
        return [getattr(w, method).remote(*a) for w, a in zip(self.workers, args_per_worker, strict=True)]

    def gather(self, method: str, refs: list[Any]) -> list[Any]:
        """The results in rank order; the first worker that dies or raises ends the wait. When a
        worker raises (say, a collective that lost its peer), a worker that died meanwhile is the
        cause and is the one reported."""
        import ray

        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                self.failed = True
                raise self._lost(refs.index(done[0]), method, exc) from exc
            except Exception as exc:
                self.failed = True
                ready = ray.wait(pending, num_returns=len(pending), timeout=5.0)[0] if pending else []
                for ref in ready:
                    try:
                        ray.get(ref)
                    except ray.exceptions.RayActorError as dead:
                        raise self._lost(refs.index(ref), method, dead) from dead
                    except Exception:
                        pass
                raise self._raised(refs.index(done[0]), method, exc) from exc
        return ray.get(refs)

    def _when(self) -> str:
        return f" of step {self.step}" if self.step is not None else " while starting"

    def _raised(self, rank: int, method: str, exc: BaseException) -> WorkerError:
        """A worker's own error, named with its rank, node and step (its fix kept)."""
        cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
        text = cause.message if isinstance(cause, RlportError) else f"{type(cause).__name__}: {cause}"
        return WorkerError(
            f"worker rank {rank} on {self.where[rank]} failed during {method!r}{self._when()}: {text}",
            cause.fix if isinstance(cause, RlportError) else "see the worker's traceback above",
            rank=rank,
            node=self.where[rank],
            step=self.step,
        )

    def _lost(self, rank: int, method: str, exc: BaseException) -> WorkerError:
        reason = str(getattr(exc, "error_msg", "") or exc).strip().splitlines()
        last = checkpoint.latest(Path(self.cfg.trainer.output_dir).expanduser())
        return WorkerError(
            f"worker rank {rank} on {self.where[rank]} died during {method!r}{self._when()}: "
            f"{reason[0] if reason else type(exc).__name__}",
            f"the last complete checkpoint, {last}, is intact: continue from it with the same command "
            "and trainer.resume_from=latest"
            if last
            else "no checkpoint was complete yet: run again (trainer.save_every=N saves every N steps)",
            rank=rank,
            node=self.where[rank],
            step=self.step,
        )

    def close(self) -> None:
        try:
            if not self.failed and self.workers:  # after a failure the survivors may be stuck in a collective
                self.call("shutdown")
        finally:
            if self.ray:
                import ray

                for w in self.workers:
                    ray.kill(w)
                if self.placement is not None:
                    self.placement.remove()
                if self._started_ray:
                    ray.shutdown()
