"""``python -m rlport_conformance.probe_check NAME``: the probe of plugin ``NAME`` in a fresh
interpreter, as rlport calls it before anything else runs (hookspecs: "must be cheap and must not
import torch or the vendor's torch extension"). Prints one JSON object: whether torch (or any
module whose name starts with ``torch``) was imported by loading the plugin or by its probe, the
probe's wall time, and its answer."""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

GROUP = "rlport.plugins"


def _torch_modules() -> list[str]:
    return sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torch_")))


def main(argv: list[str]) -> int:
    name = argv[0]
    before = _torch_modules()
    entry = next((ep for ep in metadata.entry_points(group=GROUP) if ep.name == name), None)
    if entry is None:
        print(json.dumps({"error": f"no {GROUP} entry point named {name!r}"}))
        return 1
    started = time.perf_counter()
    plugin = entry.load()
    loaded = time.perf_counter() - started
    after_load = _torch_modules()
    started = time.perf_counter()
    result = plugin.rlport_probe()
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "torch_before": before,
                "torch_after_load": after_load,
                "torch_after_probe": _torch_modules(),
                "load_seconds": loaded,
                "probe_seconds": seconds,
                "available": bool(getattr(result, "available", False)),
                "result_type": type(result).__name__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
