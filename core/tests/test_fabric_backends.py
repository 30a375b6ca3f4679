"""A fabric plugin tunes named collectives backends: the core leaves it out, with the reason, when the
active device plugin uses another backend (fixture plugins installed as real distributions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_sources import device, fabric
from test_cli_and_summary import rlport_cli

from rlport import bootstrap, summary
from rlport.errors import SelectionError
from rlport.testing import make_plugin

NCCL_DEVICE = device("ncclchip", priority=150).replace(
    'collectives_backend="gloo"', 'collectives_backend="nccl"'
)
LEFT_OUT = "tunes nccl; the active device plugin 'cpu' uses gloo"


def test_fabric_for_another_backend_is_left_out_with_the_reason(site: Path) -> None:
    make_plugin(site, "wire", fabric("wire", tunes=("nccl",)))
    make_plugin(site, "anywire", fabric("anywire", env_var="RLPORT_TEST_ANY"))
    rt = bootstrap.init()
    assert rt.device_plugin == "cpu" and rt.collectives_backend == "gloo"
    assert rt.fabric_plugins == ["anywire"]  # a fabric plugin naming no backend composes with any
    wire = next(r for r in rt.records if r.name == "wire")
    assert (wire.status, wire.reason) == ("unavailable", LEFT_OUT)
    assert rt.pm.get_plugin("wire") is None  # takes part in no hook call
    assert rt.collectives_env() == {"RLPORT_TEST_ANY": "anywire"}
    inactive = {r["name"]: r for r in summary.collect(rt)["inactive_plugins"]}
    assert inactive["wire"]["status"] == "unavailable" and inactive["wire"]["reason"] == LEFT_OUT


def test_fabric_for_the_device_backend_is_active(site: Path) -> None:
    make_plugin(site, "ncclchip", NCCL_DEVICE)
    make_plugin(site, "wire", fabric("wire", tunes=("rccl", "nccl")))
    rt = bootstrap.init()
    assert (rt.device_plugin, rt.collectives_backend) == ("ncclchip", "nccl")
    assert rt.fabric_plugins == ["wire"]
    assert rt.collectives_env() == {"RLPORT_TEST_FABRIC": "wire"}


def test_explicit_fabric_for_another_backend_is_a_loud_error(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(site, "wire", fabric("wire", tunes=("nccl",)))
    make_plugin(site, "anywire", fabric("anywire", env_var="RLPORT_TEST_ANY"))
    monkeypatch.setenv("RLPORT_FABRICS", "anywire,wire")
    with pytest.raises(SelectionError) as info:
        bootstrap.init()
    assert info.value.message == f"RLPORT_FABRICS=anywire,wire names 'wire', which {LEFT_OUT}"
    assert info.value.fix.startswith("export RLPORT_FABRICS=anywire   ")


def test_tunes_backends_must_be_a_tuple_of_names(site: Path) -> None:
    make_plugin(site, "wire", fabric("wire").replace("tunes_backends=()", 'tunes_backends="nccl"'))
    rt = bootstrap.init()
    wire = next(r for r in rt.records if r.name == "wire")
    assert wire.status == "broken" and "tunes_backends='nccl'" in wire.reason
    assert "tunes_backends=('nccl',)" in wire.fix


def test_plugins_and_info_show_the_left_out_fabric(tmp_path: Path) -> None:
    make_plugin(tmp_path, "wire", fabric("wire", tunes=("nccl",)))
    listing = rlport_cli("plugins", "--json", extra_path=tmp_path)
    assert listing.returncode == 0, listing.stderr
    wire = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}["wire"]
    assert (wire["status"], wire["reason"]) == ("unavailable", LEFT_OUT)
    table = rlport_cli("plugins", extra_path=tmp_path)
    assert table.returncode == 0 and "tunes nccl;" in table.stdout and "unavailable" in table.stdout
    info = rlport_cli("info", "--json", extra_path=tmp_path)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["fabrics"] == []
    assert {r["name"]: r["reason"] for r in data["inactive_plugins"]}["wire"] == LEFT_OUT
    failed = rlport_cli("info", extra_path=tmp_path, RLPORT_FABRICS="wire")
    assert failed.returncode == 2 and "names 'wire', which tunes nccl" in failed.stderr


RAISING_DEVICE_INFO = """
    @rlport.hookimpl
    def rlport_device_info(self):  # replaces the fixture's own definition above
        raise OSError("driver gone")
"""


def test_plugins_table_survives_a_device_info_that_raises(tmp_path: Path) -> None:
    make_plugin(tmp_path, "flaky", device("flaky", priority=150, body=RAISING_DEVICE_INFO))
    listing = rlport_cli("plugins", "--json", extra_path=tmp_path)
    assert listing.returncode == 2
    data = json.loads(listing.stdout)
    assert "OSError: driver gone" in data["selection_error"]
    assert {p["name"] for p in data["plugins"]} >= {"cpu", "flaky"}
