"""Training cases: the hooks every training process calls.

``training.optimizer``: the factory ``rlport_optimizer("adamw", device, strategy)`` answers is
``torch.optim.AdamW``'s math (decoupled weight decay, its defaults: eps 1e-8, no amsgrad) over many
steps with identical parameters and gradients: a learning rate changed in ``param_groups`` mid-run
takes effect, a ``state_dict`` round trip into a new optimizer from the factory continues the run,
and a parameter whose gradients are far below eps moves as eps says. Judged against float64
``torch.optim.AdamW`` by the tolerance rule (gradient factor), plain ``torch.optim.AdamW`` in the
same dtype being the baseline. Under ``fsdp`` the parameters are DTensors that FSDP2 shards
(``fully_shard`` on a one-device mesh of a one-rank process group the plugin's backend runs), their
gradients come from FSDP's backward, the baseline is plain AdamW on the same DTensors, and each
forward must see the weights the optimizer wrote; a strategy the plugin refuses is not run. In a
multi-device profile the fsdp case runs again across ranks (``-r2`` on the host CPU): spawned ranks
(the collectives' worker) shard the same parameters over a mesh of them, unevenly, each rank's
gradients differ and average to the single-rank ones, and rank 0's full tensors
(``DTensor.full_tensor()``) are judged as above: an optimizer that takes a shard for the whole
tensor, or keeps state the wrong size, fails here only.
``training.unsupported_strategies``: the answer is a mapping of known
strategies to reasons. ``training.before_model_build``: every active plugin's hook runs for each
strategy it does not refuse, raising nothing (an ``RlportError`` naming the fix is the only
documented failure, and it is one for a strategy the plugin does not refuse).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from rlport_conformance import attention_math as am
from rlport_conformance.recorder import CaseContext
from rlport_conformance.tolerance import GRADIENT_K, judge

STEPS = 40
LR_CHANGE_AT = 12
ROUNDTRIP_AT = 25
LR, BETAS, WEIGHT_DECAY = 3e-3, (0.8, 0.95), 0.1
#: Gradients of the last parameter: far below AdamW's eps (1e-8), so eps decides its steps.
TINY = 1e-9
#: ``actor.strategy`` values (hookspecs: rlport_optimizer, rlport_unsupported_strategies).
STRATEGIES = ("replicated", "ddp", "fsdp", "megatron")
SHAPES = ((33, 17), (65,), (8, 8))


def _inputs(dtypes: list[Any]) -> tuple[list[Any], list[list[Any]]]:
    """Initial values and per-step gradients (float64, seeded); one dtype per parameter."""
    import torch

    gen = torch.Generator().manual_seed(2024)
    init = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = []
    for _ in range(STEPS):
        step = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
        step[-1] = step[-1] * TINY
        grads.append(step)
    return init, grads


def _trajectory(make: Any, dtypes: list[Any], device: str) -> list[Any]:
    """Run ``make(params)`` for :data:`STEPS` steps; the parameters (float64, host) after each."""
    import torch

    init, grads = _inputs(dtypes)
    params = [torch.nn.Parameter(t.to(dt).to(device)) for t, dt in zip(init, dtypes, strict=True)]
    opt = make(params)
    out = []
    for step in range(STEPS):
        for p, g in zip(params, grads[step], strict=True):
            p.grad = g.to(p.dtype).to(device)
        opt.step()
        if step == LR_CHANGE_AT:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.25
        if step == ROUNDTRIP_AT:  # a checkpoint resume: new parameters, a new optimizer, its state
            state = copy.deepcopy(opt.state_dict())
            params = [torch.nn.Parameter(p.detach().clone()) for p in params]
            opt = make(params)
            opt.load_state_dict(state)
        out.append([p.detach().to("cpu", torch.float64).clone() for p in params])
    return out


def _rank_grads(grads: list[Any], step: int, rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s coefficients (so its gradients) at ``step``: the step's gradients plus
    ``(2 rank - (world - 1)) d`` for a seeded ``d`` (scaled as they are), so that the ranks differ and
    their average, which FSDP's reduce-scatter delivers, is the step's gradients; those alone at one rank."""
    import torch

    if world == 1:
        return grads[step]
    gen = torch.Generator().manual_seed(7919 * (step + 1))
    weight = 2 * rank - (world - 1)
    out = []
    for g in grads[step]:
        d = torch.randn(g.shape, generator=gen, dtype=torch.float64) * g.abs().max()
        out.append(g + weight * d)
    return out


def _sharded_model(init: list[Any], device: str, world: int = 1) -> Any:
    """A module holding ``init`` as parameters, each in a submodule of its own that FSDP2
    (``fully_shard``) shards on a mesh of ``world`` ranks (rows split unevenly past one), and then the root: the parameters become DTensors
    (``Shard(0)``) as under ``actor.strategy=fsdp``; one group per parameter, as FSDP all-gathers a
    group in one dtype. ``model(coefficients)`` is ``sum((p * c).sum())``, whose gradient is ``c``
    exactly; each submodule keeps the unsharded weights its forward saw (``seen``)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    class One(torch.nn.Module):
        def __init__(self, value: Any) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(value)
            self.seen: Any = None

        def forward(self, c: Any) -> Any:
            self.seen = self.p.detach().to("cpu", torch.float64)
            return (self.p * c.to(self.p.dtype).to(self.p.device)).sum()

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = torch.nn.ModuleList(One(t) for t in init)

        def forward(self, coefficients: list[Any]) -> Any:
            return sum(m(c) for m, c in zip(self.items, coefficients, strict=True))

    model = Holder()
    mesh = init_device_mesh(torch.device(device).type, (world,))
    for item in model.items:
        fully_shard(item, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _fsdp_trajectory(
    make: Any, dtypes: list[Any], device: str, rank: int = 0, world: int = 1
) -> tuple[list[Any], list[str]]:
    """:func:`_trajectory` on FSDP2 DTensor parameters sharded over ``world`` ranks (this process is
    ``rank``), gradients delivered by FSDP's backward (reduce-scatter, averaging :func:`_rank_grads`)
    from a forward: the full parameters (float64, host) after each step, and where a forward saw
    weights other than the ones the optimizer wrote before it."""
    import torch

    init, grads = _inputs(dtypes)
    model = _sharded_model([t.to(dt).to(device) for t, dt in zip(init, dtypes, strict=True)], device, world)
    params = list(model.parameters())
    opt = make(params)
    out: list[Any] = []
    stale: list[str] = []
    for step in range(STEPS):
        model(_rank_grads(grads, step, rank, world)).backward()
        if out:  # this forward ran on the weights of the last step
            stale += [
                f"step {step} param{i}"
                for i, m in enumerate(model.items)
                if not torch.equal(m.seen, out[-1][i])
            ]
        opt.step()
        opt.zero_grad()
        if step == LR_CHANGE_AT:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.25
        if step == ROUNDTRIP_AT:  # a resume: a new optimizer over the sharded parameters, its state
            state = copy.deepcopy(opt.state_dict())
            opt = make(params)
            opt.load_state_dict(state)
        out.append([p.detach().full_tensor().to("cpu", torch.float64) for p in params])
    return out, stale


@contextlib.contextmanager
def _single_rank_group() -> Iterator[None]:
    """A one-rank default process group started by ``rlport.collectives`` (the plugin's backend), as
    FSDP needs one; destroyed afterwards (an existing group is used as it is)."""
    import torch.distributed as dist

    from rlport.collectives import init_process_group

    if dist.is_initialized():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="rlport-conformance-fsdp-") as tmp:
        init_process_group(0, 1, init_method=f"file://{tmp}/store", timeout_s=60, check=False)
        try:
            yield
        finally:
            dist.destroy_process_group()


def _torch_adamw(params: list[Any]) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, foreach=False)


#: The sharded cases' ranks (both trajectories of every dtype set, a few seconds each).
SHARDED_TIMEOUT_S = 240.0


def rank_optimizer(c: Mapping[str, Any], rt: Any, rank: int, world: int, device: str) -> dict[str, Any]:
    """One rank of a sharded case (run by :mod:`rlport_conformance.collective_worker`): plain AdamW,
    then the plugin's, on the same FSDP2 shards; rank 0 returns both full trajectories (flat float64
    lists per step and parameter), every rank the stale forwards it saw or what the plugin raised."""
    import torch

    dev = torch.device(device)
    backend = getattr(torch, dev.type, None)
    if dev.index is not None and hasattr(backend, "set_device"):  # the mesh uses the current device
        backend.set_device(dev)
    hit = rt.resolve("rlport_optimizer", name="adamw", device=rt.device, strategy="fsdp")
    dtypes = _dtypes(c["dtypes"])
    plain, _ = _fsdp_trajectory(_torch_adamw, dtypes, device, rank, world)
    try:
        got, stale = _fsdp_trajectory(
            lambda params: hit.value(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY),
            dtypes,
            device,
            rank,
            world,
        )
    except Exception as exc:
        return {"raised": f"{type(exc).__name__}: {exc}"}
    if rank:
        return {"stale": stale}

    def flat(trajectory: list[Any]) -> list[list[list[float]]]:
        return [[t.reshape(-1).tolist() for t in params] for params in trajectory]

    return {"stale": stale, "got": flat(got), "plain": flat(plain)}


@pytest.fixture(scope="session")
def sharded_runs() -> dict[int, dict[str, Any]]:
    """One spawn of ``world`` ranks (collective_worker's) holding every sharded optimizer case of that
    world size, made when the first of them runs."""
    return {}


def _sharded_run(conformance: Any, runs: dict[int, dict[str, Any]], world: int) -> dict[str, Any]:
    from rlport_conformance import collective_worker as cw
    from rlport_conformance.cases.test_collectives import _too_few_devices

    if world not in runs:
        short = _too_few_devices(conformance, world, "the sharded optimizer cases")
        cases = [
            {
                "id": c.id,
                "task": "rlport_conformance.cases.test_training:rank_optimizer",
                "dtypes": list(c.facet["dtypes"]),
            }
            for c in conformance.cases
            if c.kind == "training.optimizer" and c.facet.get("world") == world
        ]
        workdir = Path(tempfile.mkdtemp(prefix=f"rlport-conformance-optimizer-r{world}-"))
        runs[world] = short or cw.spawn(cases, workdir, world, SHARDED_TIMEOUT_S, perf=False)
    return runs[world]


def _sharded(case: CaseContext, dtypes: list[Any], outcome: dict[str, Any]) -> None:
    """Judge a sharded case from its ranks' results."""
    import torch

    from rlport_conformance.cases.test_collectives import _absent

    per_rank = [r.get("cases", {}).get(case.id) if r else None for r in outcome["ranks"]]
    if any(p is None for p in per_rank):
        _absent(case, outcome, case.id, SHARDED_TIMEOUT_S)
        return
    failed = [
        f"rank {i}: {p.get('error') or p.get('raised')}" for i, p in enumerate(per_rank) if "stale" not in p
    ]
    if failed:
        case.fail(_raised(f"across {len(per_rank)} ranks: " + "; ".join(failed)))
        return
    stale = [f"rank {i} {s}" for i, p in enumerate(per_rank) for s in p["stale"]]
    case.check(not stale, _stale(stale))

    def tensors(trajectory: list[list[list[float]]]) -> list[Any]:
        return [
            [torch.tensor(v, dtype=torch.float64).reshape(shape) for v, shape in zip(ps, SHAPES, strict=True)]
            for ps in trajectory
        ]

    _judge(case, dtypes, tensors(per_rank[0]["got"]), tensors(per_rank[0]["plain"]))


def _raised(what: str) -> str:
    return (
        f"the optimizer raised on FSDP2 (DTensor) parameters {what}; a kernel that takes plain tensors "
        "only returns None for strategy 'fsdp'"
    )


def _stale(where: list[str]) -> str:
    return f"the forward after a step used weights other than the optimizer wrote ({', '.join(where[:3])})"


@pytest.mark.rlport_case("training.optimizer")
def test_optimizer(
    case: CaseContext, rt: Any, device: str, conformance: Any, sharded_runs: dict[int, dict[str, Any]]
) -> None:
    """Under fsdp at one rank in this process; with a ``world`` facet across that many spawned ranks."""
    f = case.facet
    refused = rt.resolve("rlport_unsupported_strategies", device=rt.device).value or {}
    if f["strategy"] in refused:
        case.passed(
            f"{f['strategy']} is refused by rlport_unsupported_strategies: no optimizer runs under it"
        )
        return
    hit = rt.resolve("rlport_optimizer", name="adamw", device=rt.device, strategy=f["strategy"])
    case.metric(answered_by=hit.plugin, factory=repr(hit.value))
    if hit.value is None or not callable(hit.value):
        case.fail(f"rlport_optimizer('adamw') answered {hit.value!r} (by {hit.plugin!r}), not a factory")
        return
    dtypes = _dtypes(f["dtypes"])

    def plugin(params: list[Any]) -> Any:
        return hit.value(params, lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)

    if "world" in f:
        _sharded(case, dtypes, _sharded_run(conformance, sharded_runs, f["world"]))
        return
    if f["strategy"] == "fsdp":
        with _single_rank_group():
            plain, _ = _fsdp_trajectory(_torch_adamw, dtypes, device)
            try:
                got, stale = _fsdp_trajectory(plugin, dtypes, device)
            except Exception as exc:  # a kernel that cannot take DTensors must not be offered for fsdp
                case.fail(_raised(f"({type(exc).__name__}: {exc})"))
                return
        case.check(not stale, _stale(stale))
    else:
        got = _trajectory(plugin, dtypes, device)
        plain = _trajectory(_torch_adamw, dtypes, device)
    _judge(case, dtypes, got, plain)


def _dtypes(names: list[str]) -> list[Any]:
    """One dtype per parameter of :data:`SHAPES`, cycling through ``names``."""
    return [am.DTYPES[names[i % len(names)]] for i in range(len(SHAPES))]


def _judge(case: CaseContext, dtypes: list[Any], got: list[Any], plain: list[Any]) -> None:
    """Judge the plugin's trajectory ``got`` against float64 AdamW, ``plain`` (torch AdamW in the same
    dtypes and setting) being the baseline: each parameter on its own (its dtype's rounding; the
    tiny-gradient one moves far less)."""
    import torch

    ref = _trajectory(_torch_adamw, [torch.float64] * len(SHAPES), "cpu")
    for i, dtype in enumerate(dtypes):
        errors = [am.max_error(g[i], r[i]) for g, r in zip(got, ref, strict=True)]
        baseline = max(am.max_error(p[i], r[i]) for p, r in zip(plain, ref, strict=True))
        rounding = max(am.rounding_error(r[i], dtype) for r in ref)
        judgement = judge(max(errors), baseline, rounding, k=GRADIENT_K)
        case.judge(judgement, prefix=f"param{i}_")
        if judgement.message:
            case.metric(**{f"param{i}_worst_step": max(range(STEPS), key=errors.__getitem__)})


@pytest.mark.rlport_case("training.unsupported_strategies")
def test_unsupported_strategies(case: CaseContext, rt: Any) -> None:
    hit = rt.resolve("rlport_unsupported_strategies", device=rt.device)
    value = hit.value
    case.metric(answered_by=hit.plugin)
    if not isinstance(value, Mapping):
        case.fail(f"rlport_unsupported_strategies answered {value!r} (by {hit.plugin!r}), not a mapping")
        return
    unknown = [k for k in value if k not in STRATEGIES]
    case.check(
        not unknown,
        f"refuses unknown strategies {unknown} (known: {', '.join(STRATEGIES)}); a misspelt one leaves "
        "the real strategy allowed",
    )
    blank = [k for k, why in value.items() if not isinstance(why, str) or not why.strip()]
    case.check(not blank, f"no reason given for refusing {blank}; the run stops with it")
    case.metric(refused=sorted(value))


@pytest.mark.rlport_case("training.before_model_build")
def test_before_model_build(case: CaseContext, rt: Any) -> None:
    from rlport.errors import RlportError

    strategy = case.facet["strategy"]
    refused = rt.resolve("rlport_unsupported_strategies", device=rt.device).value or {}
    if strategy in refused:
        case.passed(f"{strategy} is refused by rlport_unsupported_strategies: nothing to prepare")
        return
    try:
        rt.each("rlport_before_model_build", strategy=strategy, device=rt.device)
    except RlportError as exc:
        case.fail(
            f"rlport_before_model_build({strategy!r}) raised {type(exc).__name__}: {exc}; a strategy the "
            "plugin cannot prepare belongs in rlport_unsupported_strategies"
        )
        return
    except Exception as exc:
        case.fail(
            f"rlport_before_model_build({strategy!r}) raised {type(exc).__name__}: {exc} (a failed "
            "preparation raises an RlportError naming the fix)"
        )
        return
    case.passed(None, implementers=rt.implementers("rlport_before_model_build"))
