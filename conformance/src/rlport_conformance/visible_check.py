"""``python -m rlport_conformance.visible_check NAME``: the device info of plugin ``NAME`` in a fresh
interpreter, whose environment the caller narrowed with the plugin's visible-devices variable (a
runtime reads that variable once, when it starts, so every value needs its own process). As rlport
does, the plugin is probed first and the variables its probe names are exported unless already set;
then ``rlport_device_info`` is called on the plugin itself. Prints one JSON object: the device count
it reports and the variable it names, or the error it raised."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata

GROUP = "rlport.plugins"


def main(argv: list[str]) -> int:
    name = argv[0]
    entry = next((ep for ep in metadata.entry_points(group=GROUP) if ep.name == name), None)
    if entry is None:
        print(json.dumps({"error": f"no {GROUP} entry point named {name!r}"}))
        return 1
    plugin = entry.load()
    try:
        probed = plugin.rlport_probe()
        for key, value in (getattr(probed, "env", None) or {}).items():
            os.environ.setdefault(key, value)
        info = plugin.rlport_device_info()
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 0
    print(
        json.dumps(
            {
                "type": type(info).__name__,
                "count": getattr(info, "count", None),
                "visible_devices_env": getattr(info, "visible_devices_env", None),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
