"""Platform cases: the probe, device info, worker environment and capability declaration of the
plugin under test are consistent with each other and with the machine."""

from __future__ import annotations

import importlib
import os

import pytest

from rlport_conformance.plan import COLLECTIVES, DTYPES, REDUCE_OPS, REQUIRED_REDUCE_OPS
from rlport_conformance.recorder import CaseContext


@pytest.mark.rlport_case("platform.probe")
def test_probe(case: CaseContext, rt) -> None:
    from rlport.types import ProbeResult

    record = rt.selection.device
    result = record.obj.rlport_probe()
    if not isinstance(result, ProbeResult):
        case.fail(f"rlport_probe returned {type(result).__name__}, expected ProbeResult")
        return
    case.metric(priority=result.priority, available=result.available)
    case.check(result.available, f"the selected plugin's probe says unavailable: {result.reason!r}")
    case.check(bool(result.reason.strip()), "the probe gives no reason")
    case.check(
        record.builtin or result.priority > 0,
        f"a non-built-in device plugin answers priority {result.priority}; it must be above the built-in "
        "CPU plugin's 0 so that it is chosen on its hardware",
    )
    case.check(
        record.priority == result.priority,
        f"the probe answered priority {result.priority} now but {record.priority} at selection",
    )


#: The probe's time bound in a fresh interpreter ("must be cheap": a file, a library, a variable).
PROBE_SECONDS = 5.0
#: The whole fresh interpreter (start, plugin import, probe) must finish within this.
PROBE_PROCESS_SECONDS = 60.0


@pytest.mark.rlport_case("platform.probe_isolated")
def test_probe_isolated(case: CaseContext, rt) -> None:
    """The probe as rlport calls it first: in a fresh interpreter, loading the plugin and probing
    import no torch module, and the probe returns within :data:`PROBE_SECONDS`."""
    import json
    import subprocess
    import sys

    name = rt.selection.device.name
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rlport_conformance.probe_check", name],
            capture_output=True,
            text=True,
            timeout=PROBE_PROCESS_SECONDS,
            env={**os.environ, "RLPORT_SUMMARY": "0"},
        )
    except subprocess.TimeoutExpired:
        case.fail(
            f"loading plugin {name!r} and probing it took over {PROBE_PROCESS_SECONDS:g} s in a fresh interpreter"
        )
        return
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        case.fail(
            f"the fresh-interpreter probe exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
        )
        return
    found = json.loads(lines[-1])
    case.metric(probe_seconds=found["probe_seconds"], load_seconds=found["load_seconds"])
    case.check(
        not found["torch_after_load"],
        f"importing plugin {name!r} imports torch ({', '.join(found['torch_after_load'][:5])}): the probe "
        "runs before torch may be imported (its env is exported first)",
    )
    case.check(
        found["torch_after_load"] or not found["torch_after_probe"],
        f"rlport_probe of {name!r} imports torch ({', '.join(found['torch_after_probe'][:5])}); it must "
        "not (a driver file, a shared library, an environment variable or package metadata tells)",
    )
    case.check(
        found["probe_seconds"] <= PROBE_SECONDS,
        f"rlport_probe took {found['probe_seconds']:.2f} s in a fresh interpreter (bound {PROBE_SECONDS:g} s)",
    )
    case.check(found["available"], "the probe says unavailable in a fresh interpreter")


def visible_trials(current: str | None, count: int) -> list[tuple[str, int]]:
    """The values ``platform.visible_devices`` sets the plugin's variable to, each with the device
    count the plugin must then report (``rlport.devices.visible``: a list of device indices or ids,
    unset every device, set but empty none). The devices are the ones visible now: the variable's
    entries as the runtime reads them (up to ``count``), else indices ``0 .. count-1``. The first
    device alone; with two or more, the last alone (an index other than 0) and the first two; and
    the empty value."""
    from rlport.devices import visible

    entries = visible.parse(current)
    seen = list(entries[:count]) if entries is not None else [str(i) for i in range(count)]
    trials = [(seen[0], 1)] if seen else []
    if len(seen) >= 2:
        trials += [(seen[-1], 1), (",".join(seen[:2]), 2)]
    return [*trials, ("", 0)]


#: Each fresh interpreter of ``platform.visible_devices`` (start, torch, the plugin's device info).
VISIBLE_PROCESS_SECONDS = 120.0


@pytest.mark.rlport_case("platform.visible_devices")
def test_visible_devices(case: CaseContext, rt) -> None:
    """The visible-devices variable the plugin names (``DeviceInfo.visible_devices_env``) is honoured:
    in fresh interpreters with the variable narrowed (:func:`visible_trials`), ``rlport_device_info``
    counts exactly the devices it leaves visible, and none when it is set but empty. A plugin that
    names no variable has nothing to honour."""
    import json
    import subprocess
    import sys

    info = rt.device
    variable = info.visible_devices_env
    if not variable:
        case.passed("the plugin names no visible-devices variable (DeviceInfo.visible_devices_env is None)")
        return
    name = rt.selection.device.name
    trials = visible_trials(os.environ.get(variable), info.count)
    # one interpreter per value, all at once (each imports torch and the plugin)
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "rlport_conformance.visible_check", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, variable: value, "RLPORT_SUMMARY": "0"},
        )
        for value, _ in trials
    ]
    counts = {}
    for (value, expected), process in zip(trials, running, strict=True):
        shown = f"{variable}={value!r}"
        try:
            out, err = process.communicate(timeout=VISIBLE_PROCESS_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            case.fail(f"with {shown}, the fresh interpreter took over {VISIBLE_PROCESS_SECONDS:g} s")
            continue
        lines = out.strip().splitlines()
        if process.returncode != 0 or not lines:
            case.fail(
                f"with {shown}, the fresh interpreter exited {process.returncode}: {(err or out)[-1500:]}"
            )
            continue
        found = json.loads(lines[-1])
        if "error" in found:
            case.fail(f"with {shown}, rlport_device_info raised {found['error']}")
            continue
        counts[value] = found["count"]
        case.check(
            found["count"] == expected,
            f"with {shown} rlport_device_info counts {found['count']} devices; "
            + (
                "set but empty, the variable leaves none visible: expected 0"
                if not value
                else f"expected {expected}"
            ),
        )
    case.metric(variable=variable, counts=counts)


@pytest.mark.rlport_case("platform.device_info")
def test_device_info(case: CaseContext, rt) -> None:
    import torch
    import torch.distributed as dist

    info = rt.device
    case.metric(device_type=info.device_type, count=info.count, backend=info.collectives_backend)
    try:
        torch.device(info.device_type)
    except (RuntimeError, TypeError) as exc:
        case.fail(f"device_type {info.device_type!r} is not a torch device type: {exc}")
    case.check(info.count >= 1, f"device count {info.count} < 1 on the selected (available) plugin")
    case.check(
        not info.names or len(info.names) == info.count,
        f"{len(info.names)} device names for {info.count} devices",
    )
    if info.device_module:
        try:
            module = importlib.import_module(info.device_module)
        except ImportError as exc:
            case.fail(f"device_module {info.device_module!r} does not import: {exc}")
        else:
            counter = getattr(module, "device_count", None)
            if callable(counter):
                seen = int(counter())
                case.check(
                    seen == info.count,
                    f"{info.device_module}.device_count() = {seen}, info says {info.count}",
                )
    if info.visible_devices_env and os.environ.get(info.visible_devices_env):
        listed = [x for x in os.environ[info.visible_devices_env].split(",") if x.strip()]
        case.check(
            info.count <= len(listed),
            f"{info.visible_devices_env} lists {len(listed)} devices but the plugin reports {info.count}",
        )
    backend = rt.collectives_backend
    known = backend.lower() in dist.Backend.backend_list or backend.upper() in getattr(
        dist.Backend, "_plugins", {}
    )
    case.check(known, f"collectives backend {backend!r} is not known to torch.distributed")


@pytest.mark.rlport_case("platform.environment")
def test_environment(case: CaseContext, rt) -> None:
    from rlport.errors import RlportError

    conflicts = [
        f"{key}={os.environ[key]!r} but the plugins need {value!r}"
        for key, value in rt.worker_env.items()
        if key in os.environ and os.environ[key] != value and key not in rt.exported_env
    ]
    case.check(not conflicts, "environment conflicts with the plugins' worker env: " + "; ".join(conflicts))
    try:
        env = rt.collectives_env()
    except RlportError as exc:
        case.fail(f"collectives environment conflict: {exc.message}")
        env = {}
    clashes = [
        f"{k}={os.environ[k]!r} vs {v!r}" for k, v in env.items() if k in os.environ and os.environ[k] != v
    ]
    case.check(not clashes, "collectives environment conflicts with the process: " + "; ".join(clashes))
    exported = os.environ.get("RLPORT_DEVICE")
    case.check(
        exported == rt.device_plugin,
        f"RLPORT_DEVICE={exported!r} after init, expected {rt.device_plugin!r} so workers select alike",
    )
    case.metric(worker_env=sorted(rt.worker_env), collectives_env=sorted(env))


@pytest.mark.rlport_case("platform.capabilities")
def test_capabilities(case: CaseContext, rt) -> None:
    from rlport.types import Capabilities, HeadDimRange

    answer = rt.resolve("rlport_capabilities")
    caps = answer.value
    if not isinstance(caps, Capabilities):
        case.fail(f"rlport_capabilities answered {caps!r}; a device plugin must declare Capabilities")
        return
    case.metric(answered_by=answer.plugin)
    case.check(bool(caps.dtypes), "no attention dtype declared (Capabilities.dtypes is empty)")
    unknown = [d for d in caps.dtypes if d not in (*DTYPES, "float64")]
    case.check(not unknown, f"unknown dtypes {unknown}; expected names among {DTYPES}")
    case.check(bool(caps.head_dims), "no head dim declared (Capabilities.head_dims is empty)")
    bad = [d for d in caps.head_dims if not isinstance(d, HeadDimRange) and (not isinstance(d, int) or d < 1)]
    case.check(not bad, f"head dims must be positive ints or rlport.types.HeadDimRange, got {bad}")
    odd_reduce = [op for op in caps.reduce_ops if op not in ("sum", *REDUCE_OPS)]
    case.check(
        not odd_reduce, f"unknown reduce ops {odd_reduce}; expected among sum, {', '.join(REDUCE_OPS)}"
    )
    missing_reduce = [op for op in REQUIRED_REDUCE_OPS if op not in caps.reduce_ops]
    case.check(not missing_reduce, f"reduce ops {missing_reduce} are required but not declared in reduce_ops")
    odd_ops = [op for op in caps.collectives if op not in COLLECTIVES]
    case.check(not odd_ops, f"unknown collectives {odd_ops}; expected among {COLLECTIVES}")
    offered = rt.rollout_engines()
    absent = [e for e in caps.rollout_engines if e not in offered]
    case.check(not absent, f"claimed rollout engines {absent} are not offered (offered: {sorted(offered)})")


@pytest.mark.rlport_case("platform.tensor")
def test_tensor(case: CaseContext, rt) -> None:
    import torch

    device = rt.torch_device()
    host = torch.arange(4096, dtype=torch.float32).reshape(64, 64) % 13
    on_device = host.to(device)
    back = on_device.cpu()
    case.check(torch.equal(back, host), "a tensor copied to the device and back changed")
    product = (on_device @ on_device).cpu()
    expected = host.double() @ host.double()
    wrong = int((product.double() != expected).sum())
    case.check(
        wrong == 0,
        f"small-integer matmul on the device: {wrong} of {expected.numel()} elements wrong",
        wrong=wrong,
    )


@pytest.mark.rlport_case("platform.supported_stack")
def test_supported_stack(case: CaseContext, rt) -> None:
    """``rlport_supported_stack``: a list of StackRequirement with valid specifiers; a required
    distribution the plugin names is installed at a version its specifier allows (the run's own
    stack is what the plugin is certified on)."""
    from importlib import metadata

    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from rlport.types import StackRequirement

    problems, checked = [], 0
    for answer in rt.each("rlport_supported_stack"):
        if not isinstance(answer.value, list | tuple):
            problems.append(f"{answer.plugin}: answered {answer.value!r}, not a list")
            continue
        for req in answer.value:
            if not isinstance(req, StackRequirement):
                problems.append(f"{answer.plugin}: {req!r} is not a StackRequirement")
                continue
            try:
                spec = SpecifierSet(req.specifier)
            except InvalidSpecifier:
                problems.append(
                    f"{answer.plugin}: {req.distribution} {req.specifier!r} is not a version specifier"
                )
                continue
            checked += 1
            try:
                installed = metadata.version(req.distribution)
            except metadata.PackageNotFoundError:
                if not req.optional:
                    problems.append(f"{answer.plugin}: requires {req.distribution}, which is not installed")
                continue
            if not spec.contains(installed, prereleases=True):
                problems.append(f"{answer.plugin}: {req.distribution} {installed} is outside {req.specifier}")
    case.metric(requirements=checked)
    case.check(not problems, "; ".join(problems[:4]))


@pytest.mark.rlport_case("platform.doctor")
def test_doctor(case: CaseContext, rt) -> None:
    """``rlport_doctor``: never raises (a problem is returned), answers a list of Finding."""
    from rlport.types import Finding

    answers, failures = rt.each_guarded("rlport_doctor", device=rt.device)
    for failed in failures:
        case.fail(
            f"rlport_doctor of {failed.plugin!r} raised {type(failed.value).__name__}: {failed.value} "
            "(the hook returns problems as Findings, never raises)"
        )
    for answer in answers:
        bad = (
            [f for f in answer.value if not isinstance(f, Finding)]
            if isinstance(answer.value, list | tuple)
            else [answer.value]
        )
        case.check(not bad, f"rlport_doctor of {answer.plugin!r} returned {bad[:2]!r}; expected Findings")
    case.passed(None, findings=sum(len(a.value) for a in answers if isinstance(a.value, list | tuple)))


@pytest.mark.rlport_case("platform.allocator_settings")
def test_allocator_settings(case: CaseContext, rt) -> None:
    """``rlport_allocator_settings(phase)``: AllocatorSettings or None, its env string to string."""
    from rlport.types import AllocatorSettings

    value = rt.resolve("rlport_allocator_settings", phase=case.facet["phase"]).value
    if value is None:
        case.passed("the device's defaults")
        return
    if not case.check(isinstance(value, AllocatorSettings), f"answered {value!r}, not AllocatorSettings"):
        return
    bad = {k: v for k, v in value.env.items() if not (isinstance(k, str) and isinstance(v, str) and k)}
    case.check(not bad, f"environment entries that are not name/value strings: {bad}")
