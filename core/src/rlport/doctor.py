"""``rlport doctor``: every problem the core can see before a run, each with its fix.

Checks broken plugins, selection (ties, an explicit choice that cannot be honoured), the supported
stack each active plugin declares, conflicting device-visibility and process variables, the
environment plugins need versus what is set, and patches that were skipped or failed (importing
the module of every pending patch first, so that a patch failing only at that import is listed).
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import TYPE_CHECKING

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from rlport.errors import RlportError
from rlport.types import Finding

if TYPE_CHECKING:
    from rlport.runtime import Runtime


def _stack(runtime) -> list[Finding]:  # type: ignore[no-untyped-def]
    out = []
    for answer in runtime.each("rlport_supported_stack"):
        for req in answer.value:
            try:
                installed = metadata.version(req.distribution)
            except metadata.PackageNotFoundError:
                if not req.optional:
                    out.append(
                        Finding(
                            "stack",
                            f"{answer.plugin} needs {req.distribution}{req.specifier} ({req.why}), not installed",
                            f"pip install '{req.distribution}{req.specifier}'",
                        )
                    )
                continue
            try:
                ok = SpecifierSet(req.specifier).contains(Version(installed), prereleases=True)
            except (InvalidSpecifier, InvalidVersion) as exc:
                out.append(
                    Finding(
                        "stack",
                        f"{answer.plugin} declares {req.distribution}{req.specifier}: {exc}",
                        f"report it to the maintainers of {answer.plugin}",
                    )
                )
                continue
            if not ok:
                out.append(
                    Finding(
                        "stack",
                        f"{req.distribution} {installed} is installed; {answer.plugin} supports "
                        f"{req.distribution}{req.specifier} ({req.why})",
                        f"pip install '{req.distribution}{req.specifier}'",
                    )
                )
    return out


def _process_env(runtime) -> list[Finding]:  # type: ignore[no-untyped-def]
    out = []
    env = os.environ
    dev = runtime.device
    visible = env.get(dev.visible_devices_env) if dev.visible_devices_env else None
    if dev.visible_devices_env and visible is not None and not visible.strip():
        out.append(
            Finding(
                "environment",
                f"{dev.visible_devices_env} is set but empty: no device is visible",
                f"unset {dev.visible_devices_env}",
            )
        )
    for other in dev.conflicting_env:
        if other in env and visible is not None and env[other] != visible:
            out.append(
                Finding(
                    "environment",
                    f"{dev.visible_devices_env}={visible!r} and {other}={env[other]!r} disagree on which devices "
                    "this process sees",
                    f"unset {other} and keep {dev.visible_devices_env} only",
                )
            )
    for key, value in runtime.worker_env.items():
        if key in env and env[key] != value and key not in runtime.exported_env:
            out.append(
                Finding(
                    "environment",
                    f"{key}={env[key]!r} is set, but active plugins need {value!r}",
                    f"unset {key}",
                )
            )
    rank, world = env.get("RANK"), env.get("WORLD_SIZE")
    if (
        rank is not None
        and world is not None
        and rank.isdigit()
        and world.isdigit()
        and int(rank) >= int(world)
    ):
        out.append(
            Finding(
                "environment",
                f"RANK={rank} is not below WORLD_SIZE={world}",
                "let your launcher (torchrun, Ray) set RANK and WORLD_SIZE",
            )
        )
    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > (os.cpu_count() or 1):
        out.append(
            Finding(
                "environment",
                f"OMP_NUM_THREADS={threads} exceeds the {os.cpu_count()} cores here",
                f"export OMP_NUM_THREADS={os.cpu_count()}",
            )
        )
    return out


def _plugin_findings(runtime: Runtime) -> list[Finding]:
    """What each active plugin's own ``rlport_doctor`` sees; a plugin that raises is itself a finding."""
    answers, failures = runtime.each_guarded("rlport_doctor", device=runtime.device)
    out = [
        Finding(
            "plugins",
            f"rlport_doctor of plugin {failed.plugin!r} raised {type(failed.value).__name__}: {failed.value}",
            f"report it to the maintainers of {failed.plugin}",
        )
        for failed in failures
    ]
    for answer in answers:
        for finding in answer.value:
            if isinstance(finding, Finding):
                out.append(finding)
            else:
                out.append(
                    Finding(
                        "plugins",
                        f"rlport_doctor of plugin {answer.plugin!r} returned {finding!r}; expected a Finding",
                        f"report it to the maintainers of {answer.plugin}",
                    )
                )
    return out


def diagnose() -> list[Finding]:
    """Run every check. Never raises for a plugin's fault: that is a finding."""
    from rlport import bootstrap
    from rlport.selection import probe

    findings: list[Finding] = []
    try:
        _settings, records = bootstrap.build()
    except RlportError as exc:
        return [Finding("settings", exc.message, exc.fix)]
    for record in records:
        if record.status == "available" and record.obj is not None:
            probe(record)
        if record.status == "broken":
            findings.append(Finding("plugins", record.reason, record.fix))
        findings += record.findings
    try:
        runtime = bootstrap.init()
    except RlportError as exc:
        findings.append(Finding("selection", exc.message, exc.fix))
        return findings
    findings += _stack(runtime)
    findings += _process_env(runtime)
    findings += _plugin_findings(runtime)
    try:
        runtime.merged("rlport_collectives_env", backend=runtime.collectives_backend)
    except RlportError as exc:
        findings.append(Finding("collectives", exc.message, exc.fix))
    from rlport.patches import get_manager

    get_manager().import_targets()  # decides pending patches: a late failure is a finding too
    findings += [Finding("patches", problem, fix) for problem, fix in get_manager().problems()]
    return findings
