"""Running the suite: select the plugin under test through the environment, run the cases in a pytest
subprocess (restarting after a crash, without the cases already done), and build the report.

The pytest process is a child so that a plugin that kills its process (a segfault in a kernel)
yields CRASH for that one case instead of ending the run, and so that each run starts a fresh
runtime. It runs with plugin autoload off and its own ini file: the suite's behaviour does not
depend on the current directory or other installed pytest plugins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport_conformance import report as report_mod
from rlport_conformance.recorder import read_events

GROUP = "rlport.plugins"
INI = "[pytest]\naddopts =\nconsole_output_style = count\n"


@dataclass
class RunOptions:
    plugin: str | None = None
    keyword: str | None = None
    waivers: Path | None = None
    case_timeout: float = 300.0
    perf: bool = True
    quiet: bool = False
    max_restarts: int = 3
    #: Ranks of the collectives cases (1: the single-device profile); None: every visible device.
    world_size: int | None = None
    #: Extra environment for the pytest process (a meta-test adds PYTHONPATH to find its mutant).
    env: dict[str, str] = field(default_factory=dict)


def plugin_env(name: str | None, env: dict[str, str]) -> dict[str, str]:
    """``env`` changed so that ``rlport.init()`` selects plugin ``name``: a device plugin through
    ``RLPORT_DEVICE``, a fabric plugin through ``RLPORT_FABRICS``; either added to ``RLPORT_PLUGINS``
    when that allow-list is set."""
    env = dict(env)
    env.pop("RLPORT_SUMMARY_SHOWN", None)
    env.pop("RLPORT_CONFORMANCE_PLUGIN", None)
    env["RLPORT_SUMMARY"] = "0"
    if not name:
        return env
    kind = plugin_kind(name, env)
    env["RLPORT_CONFORMANCE_PLUGIN"] = name
    if "RLPORT_PLUGINS" in env:
        allowed = [n for n in env["RLPORT_PLUGINS"].split(",") if n.strip()]
        env["RLPORT_PLUGINS"] = ",".join([*allowed, name] if name not in allowed else allowed)
    if kind == "fabric":
        fabrics = [n for n in env.get("RLPORT_FABRICS", "").split(",") if n.strip()]
        env["RLPORT_FABRICS"] = ",".join([*fabrics, name] if name not in fabrics else fabrics)
    else:
        env["RLPORT_DEVICE"] = name
    return env


def plugin_kind(name: str, env: dict[str, str]) -> str:
    """The manifest kind of installed plugin ``name`` (looked up on the PYTHONPATH the run will use)."""
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    eps = [
        ep
        for dist in metadata.distributions(path=[*paths, *sys.path])
        for ep in dist.entry_points
        if ep.group == GROUP and ep.name == name
    ]
    if not eps:
        installed = sorted(
            {
                ep.name
                for dist in metadata.distributions(path=[*paths, *sys.path])
                for ep in dist.entry_points
                if ep.group == GROUP
            }
        )
        raise ConfigError(
            f"no rlport plugin named {name!r} is installed (installed: {', '.join(installed) or 'none'})",
            f"pip install the plugin's distribution, or pass one of: {' '.join(installed)}",
        )
    sys.path[:0] = [p for p in paths if p not in sys.path]
    try:
        obj = eps[0].load()
    except Exception as exc:
        raise ConfigError(
            f"plugin {name!r} does not load: {type(exc).__name__}: {exc}",
            f"run `rlport plugins` to see its error; fix or reinstall {name}",
        ) from exc
    manifest = getattr(obj, "rlport_manifest", None)
    return getattr(manifest, "kind", "device")


def _cases_dir() -> Path:
    import rlport_conformance.cases

    return Path(rlport_conformance.cases.__file__).resolve().parent


def pytest_command(log: Path, ini: Path, options: RunOptions, exclude: Path | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(_cases_dir()),
        "-c",
        str(ini),
        "--rootdir",
        str(_cases_dir()),
        "-p",
        "rlport_conformance.plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-rN",
        "--tb=no",
        "--rlport-conformance",
        "--rlport-conformance-log",
        str(log),
        "--rlport-case-timeout",
        str(options.case_timeout),
        # the per-case time limit is pytest-timeout's: its failure becomes TIMEOUT for that case
        "-p",
        "pytest_timeout",
        f"--timeout={options.case_timeout:g}",
        "--timeout-method=signal",
    ]
    if not options.perf:
        cmd.append("--rlport-no-perf")
    if options.world_size is not None:
        cmd += ["--rlport-world-size", str(options.world_size)]
    if options.keyword:
        cmd += ["-k", options.keyword]
    if exclude is not None:
        cmd += ["--rlport-conformance-exclude", str(exclude)]
    return cmd


def run(options: RunOptions) -> dict[str, Any]:
    """Run the suite and return the sealed report (raises ConfigError when nothing could run)."""
    env = plugin_env(options.plugin, {**os.environ, **options.env})
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    waivers = None
    if options.waivers:
        from rlport_conformance import waivers as waivers_mod

        waivers = waivers_mod.load(options.waivers)
    work = Path(tempfile.mkdtemp(prefix="rlport-conformance-"))
    log, ini = work / "events.jsonl", work / "pytest.ini"
    ini.write_text(INI)
    started = time.time()
    restarts, exclude, codes = 0, None, []
    output = subprocess.DEVNULL if options.quiet else None
    while True:
        proc = subprocess.run(
            pytest_command(log, ini, options, exclude),
            env=env,
            cwd=work,
            stdout=output,
            stderr=subprocess.STDOUT if options.quiet else None,
        )
        codes.append(proc.returncode)
        events = read_events(log)
        if proc.returncode >= 0 or restarts >= options.max_restarts:
            break
        # The process died (a signal): go on without every case that started, crashed one included.
        done = {e["id"] for e in events if e.get("event") == "start"}
        exclude = work / "exclude.txt"
        exclude.write_text("\n".join(sorted(done)) + "\n")
        restarts += 1
    if not any(e.get("event") == "session" for e in events):
        fatal = next((e for e in events if e.get("event") == "fatal"), None)
        raise ConfigError(
            "the conformance run could not start the plugin under test"
            + (f": {fatal['error']}" if fatal else f" (pytest exited {codes[-1]})"),
            f"run `RLPORT_DEVICE={options.plugin} rlport info` to see why"
            if options.plugin
            else "run `rlport info`",
        )
    run_info = {
        "command": "rlport conformance"
        + (f" --plugin {options.plugin}" if options.plugin else "")
        + (f" --world-size {options.world_size}" if options.world_size is not None else "")
        + (f" -k {options.keyword!r}" if options.keyword else ""),
        "seconds": round(time.time() - started, 1),
        "pytest_exit_codes": codes,
        "restarts_after_crash": restarts,
        "waivers": str(options.waivers) if options.waivers else None,
    }
    return report_mod.build(events, selection=options.keyword, waivers=waivers, run=run_info)
