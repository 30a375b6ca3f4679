"""Print the patch section of the rlport summary for a fixture plugin with applied, skipped
(one of them as expected) and pending patches, then the line reported when the pending one applies.

Builds, in a temporary folder, a real installed distribution ``greetlib`` 1.2.0 (the third-party
code) and a real plugin distribution ``rlport-demo`` (an ``rlport.plugins`` entry point whose module
declares five patches), loads the plugin through its entry point, applies its patches with the
core's patch manager and prints the table ``rlport info`` and the startup summary show.

    python docs/examples/patch_summary_demo.py            # the table
    python docs/examples/patch_summary_demo.py --json     # the records, as `rlport info --json`
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
from importlib.metadata import entry_points

import pluggy
from rich.console import Console

from rlport import hookspecs
from rlport.patches import PatchManager, event_line
from rlport.testing import make_distribution, make_plugin

GREETLIB = {
    "greetlib/__init__.py": "",
    "greetlib/core.py": """
        def greet(name):
            return f"hello {name}"


        class Greeter:
            def greet(self, name):
                return f"hi {name}"
    """,
    "greetlib/kernels.py": """
        def rms_norm(x):
            return x
    """,
}

PLUGIN = """
import rlport
from rlport.types import Manifest, PatchSpec

rlport_manifest = Manifest(name="demo", kind="fabric", hook_api=">=1.0,<2")


def wrap_greet(original):
    def greet(self, name):
        return original(self, name).upper()

    return greet


def shout(self, name):
    return self.greet(name) + "!"


@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec(
            target="greetlib.core:Greeter.greet",
            replacement=wrap_greet,
            action="wrapped",
            distribution="greetlib",
            versions=">=1.0,<2",
            reason="route greet through the device kernel",
            upstream="greetlib#42",
            remove_when="greetlib 2.0 dispatches by device",
        ),
        PatchSpec(
            target="greetlib.core:Greeter.shout",
            replacement="rlport_demo:shout",
            action="added",
            distribution="greetlib",
            versions=">=1.0,<2",
            reason="the rollout engine calls Greeter.shout",
        ),
        PatchSpec(
            target="greetlib.core:Greeter.greet_all",
            replacement="rlport_demo:shout",
            action="added",
            distribution="greetlib",
            versions="<1.0",
            reason="greetlib 0.x lacks greet_all",
            expected_skip=True,
        ),
        PatchSpec(
            target="greetlib.core:greet",
            replacement="rlport_demo:shout",
            action="replaced",
            distribution="greetlib",
            versions=">=2.0",
            reason="greet's signature changed in greetlib 2",
        ),
        PatchSpec(
            target="greetlib.kernels:rms_norm",
            replacement=wrap_greet,
            action="wrapped",
            distribution="greetlib",
            versions=">=1.0,<2",
            reason="fused RMSNorm",
        ),
    ]
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as root:
        make_distribution(root, "greetlib", "1.2.0", modules=GREETLIB)
        make_plugin(root, "demo", PLUGIN, attr="")
        sys.path.insert(0, root)
        importlib.invalidate_caches()
        import greetlib.core

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        (ep,) = entry_points(group="rlport.plugins", name="demo")
        pm.register(ep.load(), name="demo")
        manager = PatchManager()
        manager.apply_from_plugins(pm, ["demo"])
        if "--json" in sys.argv:
            print(json.dumps(manager.to_json(), indent=2))
        else:
            console = Console(width=int(sys.argv[1]) if sys.argv[1:] else 120)
            manager.render(console)
            # the pending patch applies at the first import of its module: one line reports it
            manager.set_reporter(lambda event: console.print(event_line(event), soft_wrap=True))
            import greetlib.kernels  # noqa: F401
        manager.revert_all()


if __name__ == "__main__":
    main()
