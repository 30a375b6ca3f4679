"""Builds (once) and loads the simdev C++ runtime with torch.utils.cpp_extension.

The build folder is ``$RLPORT_SIMDEV_BUILD_DIR`` or ``~/.cache/rlport-simdev/<torch version>-<source
folder hash>``; torch's JIT loader rebuilds only when a source file or the flags change. The source
folder is part of the default name because ninja rebuilds whenever the sources' paths change, so a
checkout and an installed copy sharing one folder would rebuild each other's library on every switch.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = [CSRC / "runtime.cpp", CSRC / "bindings.cpp"]
EXTRA_CFLAGS = ["-O1", "-g0"]


def build_dir() -> Path:
    """Where the compiled runtime lives."""
    explicit = os.environ.get("RLPORT_SIMDEV_BUILD_DIR")
    if explicit:
        path = Path(explicit)
    else:
        where = hashlib.sha1(str(CSRC.resolve()).encode()).hexdigest()[:8]
        path = Path.home() / ".cache" / "rlport-simdev" / f"{torch.__version__}-{where}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(verbose: bool = False):
    """Compile if needed and import the runtime; returns the ``_C`` module.

    ``last_build_seconds`` holds how long the load took (a build, or only an import).
    """
    global last_build_seconds
    from torch.utils import cpp_extension

    os.environ.setdefault("MAX_JOBS", "2")
    start = time.perf_counter()
    module = cpp_extension.load(
        name="rlport_simdev_C",
        sources=[str(s) for s in SOURCES],
        extra_cflags=EXTRA_CFLAGS,
        extra_include_paths=[str(CSRC)],
        build_directory=str(build_dir()),
        with_cuda=False,
        verbose=verbose,
    )
    last_build_seconds = time.perf_counter() - start
    return module


last_build_seconds: float | None = None
