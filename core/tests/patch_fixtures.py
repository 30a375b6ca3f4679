"""Real installed fixture distributions for the patch tests.

:func:`build` writes, into one folder, the distribution ``patchme`` 1.2.0 (the third-party package
being patched) and several plugin distributions ``rlport-p*``, each with an ``rlport.plugins`` entry
point naming a module that carries ``rlport_manifest`` and an ``@rlport.hookimpl rlport_patches()``.
Put the folder on ``sys.path`` (or ``PYTHONPATH``) and importlib.metadata finds them as pip would.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pluggy

from rlport import hookspecs
from rlport.testing import make_distribution, make_plugin

PATCHME_VERSION = "1.2.0"

PATCHME = {
    "patchme/__init__.py": """
        __version__ = "1.2.0"
    """,
    "patchme/core.py": """
        def greet(name):
            return f"hello {name}"


        class Base:
            def describe(self):
                return "base"


        class Greeter(Base):
            prefix = "hi"

            def greet(self, name):
                return f"{self.prefix} {name}"

            @staticmethod
            def norm(text):
                return text.strip()

            @classmethod
            def make(cls):
                return cls()
    """,
    "patchme/late.py": """
        IMPORTS = []
        IMPORTS.append("late")


        def compute(x):
            return x + 1


        class Calc:
            def double(self, x):
                return 2 * x
    """,
    "patchme/later.py": """
        def triple(x):
            return 3 * x
    """,
    "patchme/broken.py": """
        raise RuntimeError("patchme.broken needs a driver")
    """,
}

_HEADER = """
import rlport
from rlport.types import Manifest, PatchSpec

rlport_manifest = Manifest(name="{name}", kind="fabric", hook_api=">=1.0,<2", description="patch fixture")
CALLS = []


def tag(label):
    def wrapper(original):
        def wrapped(*args, **kwargs):
            CALLS.append(label)
            result = original(*args, **kwargs)
            return f"[{{label}}] " + result if isinstance(result, str) else result

        wrapped.__wrapped__ = original
        return wrapped

    return wrapper
"""

PLUGINS: dict[str, str] = {
    # Every action and descriptor kind, all in range.
    "pbasic": """
def shout(self, name):
    return self.greet(name).upper()


def new_greet(name):
    return f"HELLO {name}"


def make_replacement(cls):
    return "made by pbasic"


@rlport.hookimpl
def rlport_patches():
    common = dict(distribution="patchme", versions=">=1.0,<2", upstream="patchme#12", remove_when="patchme 2")
    return [
        PatchSpec("patchme.core:Greeter.shout", shout, "added", reason="device needs shout", **common),
        PatchSpec("patchme.core:greet", "rlport_pbasic:new_greet", "replaced", reason="faster greet", **common),
        PatchSpec("patchme.core:Greeter.greet", tag("pbasic"), "wrapped", reason="trace greet", **common),
        PatchSpec("patchme.core:Greeter.norm", tag("norm"), "wrapped", reason="static", **common),
        PatchSpec("patchme.core:Greeter.make", make_replacement, "replaced", reason="classmethod", **common),
        PatchSpec("patchme.core:Greeter.describe", tag("describe"), "wrapped", reason="inherited", **common),
    ]
""",
    # One patch outside its version range (skipped), one inside (applied), one whose distribution is
    # not installed, and a compatibility patch for older releases declared an expected skip.
    "poldver": """
@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.core:greet", tag("old"), "wrapped", "patchme", ">=2.0", reason="only for patchme 2"),
        PatchSpec("patchme.core:EXTRA", 42, "added", "patchme", ">=1.0", reason="constant"),
        PatchSpec("patchme.core:Greeter.greet", tag("x"), "wrapped", "not-installed-dist", ">=1", reason="absent"),
        PatchSpec("patchme.core:Greeter.norm", tag("compat"), "wrapped", "patchme", "<1.0", reason="0.x bug",
                  expected_skip=True),
    ]
""",
    # A missing target: nothing of this plugin applies.
    "pmissing": """
@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.core:greet", tag("missing"), "wrapped", "patchme", ">=1", reason="ok one"),
        PatchSpec("patchme.core:Greeter.nope", tag("missing"), "replaced", "patchme", ">=1", reason="gone"),
    ]
""",
    # Patches Greeter.greet without stacking: refused when pbasic patched it first.
    "prival": """
@rlport.hookimpl
def rlport_patches():
    return [PatchSpec("patchme.core:Greeter.greet", tag("rival"), "wrapped", "patchme", ">=1", reason="rival")]
""",
    # Declares that it goes on top of pbasic's patch.
    "pstack": """
@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec(
            "patchme.core:Greeter.greet", tag("stack"), "wrapped", "patchme", ">=1", reason="on top",
            stacks_on="pbasic",
        )
    ]
""",
    # Three patches; the third's wrapper raises when applied: the first two are rolled back.
    "pthree": """
def broken(original):
    raise RuntimeError("kernel table missing")


@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.core:greet", tag("one"), "wrapped", "patchme", ">=1", reason="one"),
        PatchSpec("patchme.core:Greeter.greet", tag("two"), "wrapped", "patchme", ">=1", reason="two"),
        PatchSpec("patchme.core:Greeter.norm", broken, "wrapped", "patchme", ">=1", reason="three"),
    ]
""",
    # Patches of a module nobody imported yet: pending until it is imported.
    "plate": """
def double(self, x):
    return 20 * x


@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.late:compute", "rlport_plate:wrap_compute", "wrapped", "patchme", ">=1", reason="w"),
        PatchSpec("patchme.late:Calc.double", double, "replaced", "patchme", ">=1", reason="r"),
    ]


def wrap_compute(original):
    def compute(x):
        CALLS.append("compute")
        return 100 + original(x)

    return compute
""",
    # A pending patch whose target turns out to be missing when patchme.later is imported. The patch of
    # patchme.core applies at init when that module is imported already; it is rolled back then, and
    # the one pending on patchme.late will not apply (all or nothing per plugin).
    "platebad": """
@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.core:greet", tag("bad"), "wrapped", "patchme", ">=1", reason="at init"),
        PatchSpec("patchme.late:compute", tag("bad"), "wrapped", "patchme", ">=1", reason="other module"),
        PatchSpec("patchme.later:triple", tag("t"), "wrapped", "patchme", ">=1", reason="fine"),
        PatchSpec("patchme.later:quadruple", tag("q"), "wrapped", "patchme", ">=1", reason="gone"),
    ]
""",
    # A device plugin (not the CPU one) that patches a real transformers model class, which
    # rlport.init() does not import: pending until the model is built.
    "pdev": """
from rlport.types import DeviceInfo, ProbeResult

rlport_manifest = Manifest(name="pdev", kind="device", hook_api=">=1.0,<2", description="device fixture")


@rlport.hookimpl
def rlport_probe():
    return ProbeResult(available=True, reason="the fixture accelerator is always here", priority=100)


@rlport.hookimpl
def rlport_device_info():
    return DeviceInfo(device_type="cpu", count=1, names=("fixture accelerator",))


@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm.forward", tag("norm"), "wrapped",
                  "transformers", ">=4.56", reason="fused RMSNorm kernel"),
        PatchSpec("transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm.old_forward", tag("norm"),
                  "wrapped", "transformers", "<4.40", reason="transformers 4.3x layout",
                  expected_skip=True),
    ]
""",
    # A real transformers class.
    "pqwen": """
def wrap_forward(original):
    def forward(self, hidden_states):
        CALLS.append(tuple(hidden_states.shape))
        return original(self, hidden_states)

    return forward


@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec(
            "transformers.models.qwen2.modeling_qwen2:Qwen2RMSNorm.forward", wrap_forward, "wrapped",
            distribution="transformers", versions=">=4.56", reason="fused RMSNorm kernel",
            upstream="https://github.com/huggingface/transformers", remove_when="never: device kernel",
        )
    ]
""",
    # For the full-init and demo runs: applied, skipped and pending patches in one plugin.
    "pdemo": """
@rlport.hookimpl
def rlport_patches():
    return [
        PatchSpec("patchme.core:Greeter.greet", tag("demo"), "wrapped", "patchme", ">=1.0,<2",
                  reason="route greet through the device's fused kernel", upstream="patchme#7",
                  remove_when="patchme>=2 ships the kernel"),
        PatchSpec("patchme.core:Greeter.shout", "rlport_pdemo:shout", "added", "patchme", ">=1.0,<2",
                  reason="engine calls Greeter.shout"),
        PatchSpec("patchme.core:greet", tag("old"), "replaced", "patchme", ">=2.0",
                  reason="greet signature changed in patchme 2"),
        PatchSpec("patchme.late:compute", tag("late"), "wrapped", "patchme", ">=1.0,<2",
                  reason="late-bound compute kernel"),
    ]


def shout(self, name):
    return self.greet(name).upper()
""",
}


def build(root: Path) -> Path:
    """Write ``patchme`` and every fixture plugin into ``root``; return ``root``."""
    make_distribution(root, "patchme", PATCHME_VERSION, modules=PATCHME)
    for name, body in PLUGINS.items():
        make_plugin(root, name, _HEADER.format(name=name) + body, attr="")
    importlib.invalidate_caches()
    return root


def forget_modules() -> None:
    """Drop ``patchme`` and the fixture plugins from ``sys.modules`` so the next import is fresh."""
    for name in list(sys.modules):
        if name == "patchme" or name.startswith("patchme.") or name.startswith("rlport_p"):
            del sys.modules[name]
    importlib.invalidate_caches()


def plugin_manager(*names: str) -> pluggy.PluginManager:
    """A PluginManager holding the named fixture plugins, loaded through their entry points."""
    from importlib.metadata import entry_points

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in names:
        (ep,) = entry_points(group="rlport.plugins", name=name)
        pm.register(ep.load(), name=name)
    return pm
