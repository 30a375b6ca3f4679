"""``rlport --version``: the core's version and every installed rlport distribution's, read from
package metadata without loading any plugin (a plugin that fails to import is still listed)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from plugin_sources import device

import rlport
from rlport import versions
from rlport.testing import make_distribution, make_plugin


def rlport_version(extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "rlport", "--version"], capture_output=True, text=True, env=env, timeout=60
    )


def test_version_lists_the_core_and_the_conformance_suite() -> None:
    result = rlport_version()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"rlport {rlport.__version__} (hook API {rlport.HOOK_API_VERSION})"
    assert f"  rlport {importlib.metadata.version('rlport')}  plugins: cpu" in lines
    assert f"  rlport-conformance {importlib.metadata.version('rlport-conformance')}" in lines


def test_version_lists_plugin_distributions_without_loading_them(tmp_path: Path) -> None:
    make_plugin(tmp_path, "fast", device("fast"), version="2.4.0")
    make_plugin(tmp_path, "crashy", "raise RuntimeError('vendor runtime missing')\n", version="0.9.1")
    make_distribution(tmp_path, "unrelated", "1.0", modules={"unrelated.py": ""})
    result = rlport_version(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  rlport-fast 2.4.0  plugins: fast" in result.stdout.splitlines()
    assert "  rlport-crashy 0.9.1  plugins: crashy" in result.stdout.splitlines()
    assert "unrelated" not in result.stdout
    assert result.stderr == "", "no plugin was imported, so nothing failed"


def test_installed_puts_the_project_first_and_lists_each_distribution_once(
    site: Path,
) -> None:
    make_plugin(site, "aaa", device("aaa"), version="1.0")
    names = [d.name for d in versions.installed()]
    assert names[:2] == ["rlport", "rlport-conformance"]
    assert names.count("rlport-aaa") == 1 and names.index("rlport-aaa") >= 2
    assert "rlport_aaa" not in sys.modules, "listing a plugin does not import it"
