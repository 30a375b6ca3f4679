"""Core benchmarks: what `import rlport` costs, and what plugin discovery costs.

Prints figures; decides nothing. Run: python benchmarks/bench_core.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from rich.table import Table

from rlport.console import make_console

PROBE = (
    "import sys, time, json; t = time.perf_counter(); import rlport; dt = time.perf_counter() - t; "
    "print(json.dumps({'seconds': dt, 'modules': len(sys.modules), 'torch': 'torch' in sys.modules}))"
)
BASELINE = "import sys, json; print(json.dumps({'modules': len(sys.modules)}))"


_FIXTURE = """
import rlport
from rlport.types import DeviceInfo, Manifest, ProbeResult


class Plugin:
    rlport_manifest = Manifest(name="bench{i}", kind="device", hook_api=">=1.0,<2")

    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available=False, reason="benchmark fixture")


plugin = Plugin()
"""


def _python(code: str) -> dict:
    return json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--fixtures", type=int, default=0, help="also install N fixture device plugins (real dist-info) first"
    )
    args = parser.parse_args()
    if args.fixtures:
        import os
        import tempfile

        from rlport.testing import make_plugin

        site = tempfile.mkdtemp(prefix="rlport-bench-")
        for i in range(args.fixtures):
            make_plugin(site, f"bench{i}", _FIXTURE.format(i=i))
        sys.path.insert(0, site)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))

    runs = [_python(PROBE) for _ in range(args.repeats)]
    base_modules = _python(BASELINE)["modules"]
    import_ms = statistics.median(r["seconds"] for r in runs) * 1e3
    wall = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import rlport"], check=True)
        wall.append(time.perf_counter() - t)
    bare = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t)

    from rlport import bootstrap
    from rlport.selection import select

    discover_s, select_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        settings, records = bootstrap.build()
        t1 = time.perf_counter()
        select(records, settings)
        t2 = time.perf_counter()
        discover_s.append(t1 - t)
        select_s.append(t2 - t1)
    t = time.perf_counter()
    bootstrap.init()
    init_s = time.perf_counter() - t

    table = Table(title=f"rlport core (median of {args.repeats})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("import rlport (in process)", f"{import_ms:.1f} ms")
    table.add_row(
        "python -c 'import rlport' wall / python -c 'pass' wall",
        f"{statistics.median(wall) * 1e3:.0f} ms / {statistics.median(bare) * 1e3:.0f} ms",
    )
    table.add_row("modules imported by import rlport", str(runs[0]["modules"] - base_modules))
    table.add_row("torch imported by import rlport", str(any(r["torch"] for r in runs)))
    table.add_row(
        f"plugin discovery + validation ({len(records)} installed)",
        f"{statistics.median(discover_s) * 1e3:.2f} ms",
    )
    table.add_row("probe + selection", f"{statistics.median(select_s) * 1e3:.3f} ms")
    table.add_row("first rlport.init() (imports torch, resolves, patches)", f"{init_s * 1e3:.0f} ms")
    make_console().print(table)


if __name__ == "__main__":
    main()
