"""Whether an Ascend NPU can run here, decided without importing torch or torch_npu.

torch_npu registers a ``torch.backends`` entry point (``torch_npu = torch_npu:_autoload``), so torch
imports it on every ``import torch``; without the CANN runtime that import fails on its shared
libraries, and ``import torch`` fails with it, in every program of the environment. The probe therefore
looks at what torch_npu needs, in the order it would fail:

1. ``torch_npu`` installed (its import spec, found without running it);
2. the CANN toolkit: ``ASCEND_HOME_PATH`` or ``ASCEND_TOOLKIT_HOME`` (what CANN's ``set_env.sh``
   exports), else ``/usr/local/Ascend/ascend-toolkit/latest`` or the newest ``/usr/local/Ascend/cann-*``;
3. ``libascendcl.so`` and ``libhccl.so`` loadable by the dynamic linker (what ``import torch_npu`` needs;
   a toolkit whose ``set_env.sh`` was not sourced is not on the loader path);
4. NPU devices: ``/dev/davinciN`` (any N, not only one digit), and ``npu-smi`` for the summary.

When torch_npu is installed but step 2 or 3 fails, the plugin is unavailable, asks the core to export
``TORCH_DEVICE_BACKEND_AUTOLOAD=0`` before torch is imported (so rlport's own programs and their workers
start) and reports a finding: every *other* program's ``import torch`` is broken until CANN is set up or
torch-npu is uninstalled. The switch is not enough for transformers: its ``is_torch_npu_available()``
(``transformers/utils/import_utils.py``) imports torch_npu whenever the package is installed, uncaught,
so loading any model would still fail. :func:`block_torch_npu` marks torch_npu unimportable in this
process (``sys.modules["torch_npu"] = None``: ``importlib.util.find_spec`` then answers ``None`` and
``import torch_npu`` raises ImportError), which the plugin's probe does in that case.

Every input (environment, file-system root, library loader, ``PATH`` lookup) is a parameter, so tests
decide the machine; the plugin calls :func:`detect` with the real ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlport.types import Finding, ProbeResult

AUTOLOAD = "TORCH_DEVICE_BACKEND_AUTOLOAD"
TOOLKIT_VARS = ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME")
DEFAULT_TOOLKIT = "usr/local/Ascend/ascend-toolkit/latest"
CANN_GLOB = "usr/local/Ascend/cann-*"
LIBRARIES = ("libascendcl.so", "libhccl.so")
DEVICE_NAME = re.compile(r"^davinci(\d+)$")
PRIORITY = 100

Loader = Callable[[str], object]


@dataclass(frozen=True)
class Machine:
    """What the probe reads: the environment, the file-system root (``/``), how a shared library is
    loaded (``ctypes.CDLL``), and how a program is found on ``PATH`` (``shutil.which``)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    root: Path = Path("/")
    load: Loader = ctypes.CDLL
    which: Callable[[str], str | None] = shutil.which
    torch_npu_installed: bool | None = None  # None: look it up

    def has_torch_npu(self) -> bool:
        if self.torch_npu_installed is not None:
            return self.torch_npu_installed
        return importlib.util.find_spec("torch_npu") is not None


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found; :meth:`result` turns it into the plugin's probe answer."""

    torch_npu: bool
    toolkit: Path | None
    library_errors: tuple[str, ...]
    devices: tuple[int, ...]
    npu_smi: str | None

    @property
    def cann_ok(self) -> bool:
        return self.toolkit is not None and not self.library_errors

    def result(self) -> ProbeResult:
        if not self.torch_npu:
            why = "torch-npu is not installed"
            if self.devices:
                why += f" (NPU devices {self._devices()} are present): pip install 'rlport-ascend[npu]'"
            return ProbeResult(False, why, PRIORITY)
        if not self.cann_ok:
            return ProbeResult(
                False,
                f"torch-npu is installed but {self._cann_problem()}",
                PRIORITY,
                env={AUTOLOAD: "0"},
                findings=(self._broken_import_finding(),),
            )
        if not self.devices:
            return ProbeResult(
                False,
                f"CANN toolkit at {self.toolkit} but no NPU device (/dev/davinciN) is visible",
                PRIORITY,
            )
        smi = f", npu-smi at {self.npu_smi}" if self.npu_smi else ""
        return ProbeResult(
            True, f"NPU devices {self._devices()}, CANN toolkit at {self.toolkit}{smi}", PRIORITY
        )

    def _devices(self) -> str:
        return ",".join(f"davinci{n}" for n in self.devices)

    def _cann_problem(self) -> str:
        if self.toolkit is None:
            return (
                "no CANN toolkit was found (neither ASCEND_HOME_PATH nor ASCEND_TOOLKIT_HOME is set, and "
                f"/{DEFAULT_TOOLKIT} and /{CANN_GLOB} do not exist)"
            )
        return f"the CANN libraries cannot be loaded ({'; '.join(self.library_errors)})"

    def _broken_import_finding(self) -> Finding:
        set_env = (
            f"source {self.toolkit.parent if self.toolkit.name == 'latest' else self.toolkit}/set_env.sh"
            if self.toolkit is not None
            else "source /usr/local/Ascend/ascend-toolkit/set_env.sh (install CANN first)"
        )
        return Finding(
            "ascend",
            f"torch-npu is installed but {self._cann_problem()}: torch imports torch_npu through its "
            "'torch.backends' entry point, so `import torch` fails in every program of this environment, "
            "and transformers imports it whenever it is installed, so loading a model fails too (rlport "
            f"itself runs with {AUTOLOAD}=0 and torch_npu blocked in its own processes)",
            f"{set_env}   or, on a machine without Ascend NPUs: pip uninstall torch-npu",
        )


def block_torch_npu(detection: Detection) -> bool:
    """Mark torch_npu unimportable in this process when it is installed but cannot load (no usable CANN);
    return whether it did. A torch_npu already imported is left alone."""
    if not detection.torch_npu or detection.cann_ok or "torch_npu" in sys.modules:
        return False
    sys.modules["torch_npu"] = None  # type: ignore[assignment]
    return True


def find_toolkit(machine: Machine) -> Path | None:
    """The CANN toolkit folder: the variables ``set_env.sh`` exports, else the default install places."""
    for var in TOOLKIT_VARS:
        value = machine.env.get(var, "").strip()
        if value:
            return _under(machine.root, value)
    default = machine.root / DEFAULT_TOOLKIT
    if default.is_dir():
        return default
    versions = sorted(machine.root.glob(CANN_GLOB), key=lambda p: _version_key(p.name))
    return versions[-1] if versions else None


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/") if root != Path("/") else Path(path)


def _version_key(name: str) -> tuple[int | str, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"[.\-]", name))


def library_errors(machine: Machine) -> tuple[str, ...]:
    """Why each CANN library cannot be loaded by name (empty when all load), as ``import torch_npu``
    would load them: through the dynamic linker's search path (``LD_LIBRARY_PATH``, the ld cache)."""
    errors = []
    for name in LIBRARIES:
        try:
            machine.load(_located(name, machine.env) or name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    return tuple(errors)


def _located(name: str, env: Mapping[str, str]) -> str | None:
    """The library's path in ``LD_LIBRARY_PATH`` of ``env`` (the probe may read another environment than
    the process's own), else what ``ctypes.util.find_library`` reports from the ld cache."""
    for folder in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if folder and (Path(folder) / name).exists():
            return str(Path(folder) / name)
    return ctypes.util.find_library(name.removeprefix("lib").removesuffix(".so"))


def find_devices(machine: Machine) -> tuple[int, ...]:
    """Indices of ``/dev/davinciN`` (``davinci_manager`` and the like are not devices)."""
    dev = machine.root / "dev"
    try:
        names = [p.name for p in dev.iterdir()]
    except OSError:
        return ()
    return tuple(sorted(int(m[1]) for n in names if (m := DEVICE_NAME.match(n))))


def detect(machine: Machine | None = None) -> Detection:
    """Look at the machine; never imports torch or torch_npu."""
    machine = machine or Machine()
    torch_npu = machine.has_torch_npu()
    toolkit = find_toolkit(machine)
    errors = library_errors(machine) if torch_npu and toolkit is not None else ()
    return Detection(
        torch_npu=torch_npu,
        toolkit=toolkit,
        library_errors=errors,
        devices=find_devices(machine),
        npu_smi=machine.which("npu-smi"),
    )
