"""The `rlport` command and the startup summary, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_sources import device

from rlport.testing import make_plugin, pip_install


def run(args: list[str], *, extra_path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    full.update(env)
    if extra_path is not None:
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), full.get("PYTHONPATH")]))
    return subprocess.run(args, capture_output=True, text=True, env=full, timeout=120)


def rlport_cli(*args: str, extra_path: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "rlport", *args], extra_path=extra_path, **env)


def test_import_rlport_does_not_import_torch_or_plugins() -> None:
    code = "import rlport, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'rlport')))"
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.replace("'", '"')) == ["rlport", "rlport._version", "rlport.hookspecs"]


def test_plugins_json_lists_builtin_cpu_as_active() -> None:
    result = rlport_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    cpu = plugins["cpu"]
    assert (cpu["status"], cpu["kind"], cpu["distribution"], cpu["builtin"]) == (
        "active",
        "device",
        "rlport",
        True,
    )
    assert "rlport_attention_backend" in cpu["hooks"] and "rlport_probe" in cpu["hooks"]


def test_doctor_is_clean_on_a_clean_install() -> None:
    result = rlport_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout


def test_doctor_fails_with_a_broken_plugin_and_names_the_fix(tmp_path: Path) -> None:
    make_plugin(tmp_path, "crashy", "raise RuntimeError('vendor runtime missing')\n")
    result = rlport_cli("doctor", extra_path=tmp_path)
    assert result.returncode == 1
    assert "plugin crashy (rlport-crashy 0.1.0) failed to import" in result.stdout
    assert "fix: pip install --force-reinstall rlport-crashy" in result.stdout


def test_a_broken_plugin_never_stops_the_cli(tmp_path: Path) -> None:
    make_plugin(tmp_path, "crashy", "raise SystemError('segfault-ish')\n")
    listing = rlport_cli("plugins", "--json", extra_path=tmp_path)
    assert listing.returncode == 0, listing.stderr
    statuses = {p["name"]: p["status"] for p in json.loads(listing.stdout)["plugins"]}
    # other installed plugins (a hardware plugin in the same environment) may be listed too
    assert {name: statuses.get(name) for name in ("cpu", "crashy")} == {"cpu": "active", "crashy": "broken"}
    info = rlport_cli("info", "--json", extra_path=tmp_path)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["platform"]["plugin"] == "cpu"
    assert [p["status"] for p in data["inactive_plugins"] if p["name"] == "crashy"] == ["broken"]


def test_a_tie_is_reported_by_info_and_plugins_still_lists(tmp_path: Path) -> None:
    make_plugin(tmp_path, "left", device("left", priority=7))
    make_plugin(tmp_path, "right", device("right", priority=7))
    info = rlport_cli("info", extra_path=tmp_path)
    assert info.returncode == 2
    assert "'left' and 'right' are both available at priority 7" in info.stderr
    assert "fix: export RLPORT_DEVICE=left" in info.stderr
    listing = rlport_cli("plugins", "--json", extra_path=tmp_path)
    assert listing.returncode == 2 and "'left' and 'right'" in json.loads(listing.stdout)["selection_error"]


def test_doctor_finds_conflicting_visibility_variables(tmp_path: Path) -> None:
    src = device("seer", priority=300).replace(
        'names=("seer",), collectives_backend="gloo")',
        'names=("seer",), collectives_backend="gloo", visible_devices_env="SEER_VISIBLE", '
        'conflicting_env=("SEER_OTHER_VISIBLE",))',
    )
    make_plugin(tmp_path, "seer", src)
    result = rlport_cli("doctor", extra_path=tmp_path, SEER_VISIBLE="0,1", SEER_OTHER_VISIBLE="1")
    assert result.returncode == 1
    assert "SEER_VISIBLE='0,1' and SEER_OTHER_VISIBLE='1' disagree" in result.stdout
    assert "unset SEER_OTHER_VISIBLE" in result.stdout


SUMMARY_SCRIPT = """
import multiprocessing as mp, rlport

def child():
    rlport.init()  # a spawned worker resolves again but must not print a second summary

if __name__ == "__main__":
    rlport.init()
    rlport.init()
    p = mp.get_context("spawn").Process(target=child)
    p.start(); p.join()
    assert p.exitcode == 0
"""


@pytest.mark.parametrize("rank", ["0", "1"])
def test_summary_printed_once_and_only_on_rank_zero(tmp_path: Path, rank: str) -> None:
    script = tmp_path / "job.py"
    script.write_text(SUMMARY_SCRIPT)
    result = run([sys.executable, str(script)], RANK=rank, WORLD_SIZE="2")
    assert result.returncode == 0, result.stderr
    if rank == "0":
        assert result.stderr.count("device plugin: cpu") == 1
        assert "chosen because: highest available priority (0)" in result.stderr
    else:
        assert result.stderr == ""


def test_summary_as_json_and_off(tmp_path: Path) -> None:
    code = "import rlport; rlport.init()"
    as_json = run([sys.executable, "-c", code], RLPORT_SUMMARY="json")
    data = json.loads(as_json.stderr)
    assert data["platform"]["plugin"] == "cpu" and data["resolved"]["collectives_backend"] == "gloo"
    assert {h["hook"]: h["served_by"] for h in data["hooks"]}["rlport_attention_backend"] == "cpu"
    off = run([sys.executable, "-c", code], RLPORT_SUMMARY="0")
    assert off.returncode == 0 and off.stderr == ""


def test_resolved_choice_travels_to_workers(tmp_path: Path) -> None:
    code = (
        "import os, subprocess, sys, rlport; rlport.init(); "
        "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"RLPORT_DEVICE\"])'], "
        "capture_output=True, text=True).stdout.strip())"
    )
    result = run([sys.executable, "-c", code])
    assert result.stdout.strip() == "cpu"


def test_new_plugin_installs_is_listed_and_runs_on_the_host(tmp_path: Path) -> None:
    made = rlport_cli("new-plugin", "mychip", "--dest", str(tmp_path))
    assert made.returncode == 0, made.stderr
    target = pip_install(tmp_path / "rlport-mychip", tmp_path / "site")
    listing = rlport_cli("plugins", "--json", extra_path=target)
    mychip = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}["mychip"]
    assert (mychip["distribution"], mychip["status"]) == ("rlport-mychip", "unavailable")
    assert "RLPORT_MYCHIP_ON_HOST=1" in mychip["reason"]
    info = rlport_cli("info", "--json", extra_path=target, RLPORT_MYCHIP_ON_HOST="1")
    assert json.loads(info.stdout)["platform"]["plugin"] == "mychip"
    again = rlport_cli("new-plugin", "mychip", "--dest", str(tmp_path))
    assert again.returncode == 2 and "already exists; nothing was written" in again.stderr


def test_new_plugin_rejects_a_bad_name(tmp_path: Path) -> None:
    result = rlport_cli("new-plugin", "my chip=2", "--dest", str(tmp_path))
    assert result.returncode == 2
    assert (
        "plugin name 'my chip=2' is not usable" in result.stderr
        and "rlport new-plugin my_chip_2" in result.stderr
    )
    assert not list(tmp_path.iterdir())


def test_new_plugin_takes_entry_point_names(tmp_path: Path) -> None:
    """Dashes, dots and capitals (as the entry-point group accepts them) name the plugin exactly;
    the distribution is normalised as pip does, the module is an identifier."""
    from rlport.scaffold import names_for

    assert names_for("My-Chip.v2") == {
        "name": "My-Chip.v2",
        "distribution": "rlport-my-chip-v2",
        "module": "my_chip_v2",
        "upper": "MY_CHIP_V2",
        "cls": "MyChipV2",
    }
    made = rlport_cli("new-plugin", "My-Chip.v2", "--dest", str(tmp_path))
    assert made.returncode == 0, made.stderr
    target = pip_install(tmp_path / "rlport-my-chip-v2", tmp_path / "site")
    listing = rlport_cli("plugins", "--json", extra_path=target, RLPORT_MY_CHIP_V2_ON_HOST="1")
    plugin = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}["My-Chip.v2"]
    assert (plugin["distribution"], plugin["status"], plugin["priority"]) == (
        "rlport-my-chip-v2",
        "active",
        100,
    )
    assert {"rlport_attention_backend", "rlport_memory_backend", "rlport_patches"} <= set(plugin["hooks"])


STACK_BODY = """
    @rlport.hookimpl
    def rlport_supported_stack(self):
        from rlport.types import StackRequirement
        return [StackRequirement("torch", "<1.0", "built against an ancient torch"),
                StackRequirement("rlport-no-such-runtime", ">=3", "the vendor runtime")]
"""


def test_doctor_reports_stack_mismatches_with_the_install_command(tmp_path: Path) -> None:
    make_plugin(tmp_path, "stale", device("stale", priority=300, body=STACK_BODY))
    result = rlport_cli("doctor", extra_path=tmp_path)
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert "torch 2.13.0" in out and "stale supports torch<1.0 (built against an ancient torch)" in out
    assert "fix: pip install 'torch<1.0'" in out
    assert "stale needs rlport-no-such-runtime>=3 (the vendor runtime), not installed" in out


TORCHRUN_SCRIPT = """
import torch.distributed as dist
import rlport
from rlport.collectives import init_process_group

init_process_group(int(__import__("os").environ["RANK"]), 2)   # calls rlport.init() on each rank
rlport.init()
dist.barrier()
open(__import__("sys").argv[1] + f"/rank{dist.get_rank()}.ok", "w").close()
dist.destroy_process_group()
"""


def test_summary_printed_once_under_torchrun_with_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(TORCHRUN_SCRIPT)
    result = run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
            str(tmp_path),
        ],
        RLPORT_SUMMARY="1",
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.ok")) == ["rank0.ok", "rank1.ok"]
    assert result.stderr.count("device plugin: cpu") == 1
