"""Discovery and selection against real installed fixture plugins (dist-info + entry points)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from plugin_sources import device

from rlport import bootstrap
from rlport.errors import ConfigError, PluginError, SelectionError
from rlport.testing import make_plugin


def records_by_name() -> dict:
    settings, records = bootstrap.build()
    from rlport.selection import select

    with contextlib.suppress(SelectionError, PluginError):
        select(records, settings)
    return {r.name: r for r in records}


def test_builtin_cpu_is_active_alone() -> None:
    rt = bootstrap.init()
    assert rt.device_plugin == "cpu"
    assert rt.device.device_type == "cpu"
    assert rt.collectives_backend == "gloo"
    assert [r.name for r in rt.selection.active] == ["cpu"]
    cpu = next(r for r in rt.records if r.name == "cpu")
    assert cpu.builtin and cpu.distribution == "rlport" and cpu.status == "active"


def test_plugin_that_fails_to_import_is_broken_not_dropped(site: Path) -> None:
    make_plugin(site, "badimport", "import a_module_that_does_not_exist_here\n")
    rt = bootstrap.init()
    assert rt.device_plugin == "cpu"  # the next-best plugin is used
    bad = next(r for r in rt.records if r.name == "badimport")
    assert bad.status == "broken"
    assert "failed to import" in bad.reason and "a_module_that_does_not_exist_here" in bad.reason
    assert bad.fix.startswith("pip install --force-reinstall rlport-badimport")
    assert "ModuleNotFoundError" in (bad.error or "")
    assert any("badimport" in w for w in rt.selection.warnings)


def test_probe_that_raises_is_broken_with_fix(site: Path) -> None:
    body = """
    @rlport.hookimpl
    def rlport_probe(self):
        raise RuntimeError("driver exploded")
"""
    src = device("raiser").replace(
        """    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available=True, reason="fixture device present", priority=100)
""",
        body,
    )
    make_plugin(site, "raiser", src)
    rt = bootstrap.init()
    raiser = next(r for r in rt.records if r.name == "raiser")
    assert rt.device_plugin == "cpu"
    assert raiser.status == "broken"
    assert "probe of plugin raiser" in raiser.reason and "driver exploded" in raiser.reason
    assert "RLPORT_PLUGINS=" in raiser.fix and "pip uninstall rlport-raiser" in raiser.fix


def test_two_device_plugins_at_one_priority_is_an_error_naming_both(site: Path) -> None:
    make_plugin(site, "alpha", device("alpha", priority=50))
    make_plugin(site, "beta", device("beta", priority=50))
    with pytest.raises(SelectionError) as info:
        bootstrap.init()
    assert "'alpha' and 'beta'" in info.value.message
    assert "export RLPORT_DEVICE=alpha" in info.value.fix


def test_higher_priority_wins_and_reason_says_why(site: Path) -> None:
    make_plugin(site, "fast", device("fast", priority=200, reason="fast card found"))
    rt = bootstrap.init()
    assert rt.device_plugin == "fast"
    assert "fast card found" in rt.selection.reason and "cpu (0)" in rt.selection.reason
    assert next(r for r in rt.records if r.name == "cpu").status == "available"


def test_unknown_hook_name_is_broken(site: Path) -> None:
    body = """
    @rlport.hookimpl
    def rlport_atention_backend(self, spec):
        return None
"""
    make_plugin(site, "typo", device("typo", body=body))
    rt = bootstrap.init()
    typo = next(r for r in rt.records if r.name == "typo")
    assert typo.status == "broken"
    assert "rlport_atention_backend" in typo.reason
    assert "known hooks" in typo.fix
    assert rt.device_plugin == "cpu"


def test_hook_api_newer_than_core_says_upgrade_core(site: Path) -> None:
    make_plugin(site, "future", device("future", hook_api=">=2.0"))
    rec = records_by_name()["future"]
    assert rec.status == "broken"
    assert "supports hook API >=2.0" in rec.reason and "provides hook API 1.1" in rec.reason
    assert rec.fix == "pip install --upgrade rlport"


def test_hook_api_older_than_core_says_upgrade_plugin(site: Path) -> None:
    make_plugin(site, "past", device("past", hook_api="<1.0"))
    rec = records_by_name()["past"]
    assert rec.status == "broken"
    assert rec.fix.startswith("pip install --upgrade rlport-past")


def test_allow_list_empty_means_builtins_only(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(site, "fast", device("fast", priority=200))
    monkeypatch.setenv("RLPORT_PLUGINS", "")
    rt = bootstrap.init()
    assert rt.device_plugin == "cpu"
    fast = next(r for r in rt.records if r.name == "fast")
    assert fast.status == "disabled" and fast.obj is None  # never even imported
    assert fast.fix == "export RLPORT_PLUGINS=fast"


def test_allow_list_admits_named_plugin(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(site, "fast", device("fast", priority=200))
    make_plugin(site, "badimport", "raise ImportError('nope')\n")
    monkeypatch.setenv("RLPORT_PLUGINS", "fast")
    rt = bootstrap.init()
    assert rt.device_plugin == "fast"
    assert next(r for r in rt.records if r.name == "badimport").status == "disabled"


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(site, "badimport", "raise ImportError('nope')\n")
    monkeypatch.setenv("RLPORT_STRICT", "1")
    with pytest.raises(PluginError) as info:
        bootstrap.init()
    assert "RLPORT_STRICT=1" in info.value.message and "badimport" in info.value.message
    assert "pip install --force-reinstall rlport-badimport" in info.value.fix


def test_explicit_device_that_is_unavailable_fails_loudly(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plugin(site, "absent", device("absent", available=False, reason="no absent-card driver"))
    monkeypatch.setenv("RLPORT_DEVICE", "absent")
    with pytest.raises(SelectionError) as info:
        bootstrap.init()
    assert "RLPORT_DEVICE='absent'" in info.value.message and "no absent-card driver" in info.value.message
    assert "unset RLPORT_DEVICE" in info.value.fix


def test_explicit_device_that_is_not_installed_lists_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLPORT_DEVICE", "warp")
    with pytest.raises(SelectionError) as info:
        bootstrap.init()
    message = info.value.message
    # other installed hardware plugins may be listed beside cpu
    assert "names no installed device plugin (installed: " in message
    assert "cpu" in message.split("(installed: ", 1)[1].split(")", 1)[0].split(", ")
    assert "pip install rlport-warp" in info.value.fix


def test_explicit_device_beats_priority(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(site, "fast", device("fast", priority=200))
    monkeypatch.setenv("RLPORT_DEVICE", "cpu")
    assert bootstrap.init().device_plugin == "cpu"


FABRIC = """
import rlport
from rlport.types import Manifest, PreflightResult, ProbeResult


class Fabric:
    rlport_manifest = Manifest(name="wire", kind="fabric", hook_api=">=1.0,<2")

    @rlport.hookimpl
    def rlport_probe(self):
        return ProbeResult(available=True, reason="wire adapter present")

    @rlport.hookimpl
    def rlport_collectives_env(self, backend):
        return {"RLPORT_TEST_WIRE_PROTOCOL": "fast-" + backend}

    @rlport.hookimpl
    def rlport_worker_env(self, device):
        return {"RLPORT_TEST_WIRE_WORKERS": "on"}

    @rlport.hookimpl
    def rlport_collectives_preflight(self, backend, group):
        import os
        return [PreflightResult("wire transport", os.environ.get("RLPORT_TEST_WIRE_PROTOCOL") == "fast-gloo",
                                "RLPORT_TEST_WIRE_PROTOCOL=" + os.environ.get("RLPORT_TEST_WIRE_PROTOCOL", ""))]


plugin = Fabric()
"""


def test_fabric_plugin_composes_with_cpu(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from rlport.collectives import init_process_group

    monkeypatch.delenv("RLPORT_TEST_WIRE_PROTOCOL", raising=False)
    monkeypatch.delenv("RLPORT_TEST_WIRE_WORKERS", raising=False)
    make_plugin(site, "wire", FABRIC)
    rt = bootstrap.init()
    assert rt.device_plugin == "cpu" and rt.fabric_plugins == ["wire"]
    assert rt.collectives_env() == {"RLPORT_TEST_WIRE_PROTOCOL": "fast-gloo"}
    assert rt.worker_env == {"RLPORT_TEST_WIRE_WORKERS": "on"}
    import os

    assert os.environ["RLPORT_FABRICS"] == "wire" and os.environ["RLPORT_TEST_WIRE_WORKERS"] == "on"
    try:
        results = init_process_group(0, 1, init_method=f"file://{tmp_path}/pg")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert [(r.name, r.ok) for r in results] == [("wire transport", True), ("all_reduce exact", True)]


def test_conflicting_plugin_env_is_an_error_naming_both(site: Path) -> None:
    make_plugin(site, "wire", FABRIC)
    make_plugin(
        site, "wire2", FABRIC.replace('name="wire"', 'name="wire2"').replace('"fast-" + backend', '"slow"')
    )
    rt = bootstrap.init()
    with pytest.raises(ConfigError) as info:
        rt.collectives_env()
    assert "'wire'" in info.value.message and "'wire2'" in info.value.message
    assert "RLPORT_TEST_WIRE_PROTOCOL" in info.value.message


DEFERRING_BODY = """
    calls = 0

    @rlport.hookimpl
    def rlport_attention_backend(self, spec):
        type(self).calls += 1
        if spec.head_dim == 64:
            from rlport.attention.sdpa import backend_for
            backend = backend_for(spec)
            backend.name = "picky-64"
            return backend
        return None  # defer every other head size to the reference
"""


def test_plugin_that_defers_attention_falls_back_to_reference(site: Path) -> None:
    from rlport.types import AttentionSpec

    make_plugin(site, "picky", device("picky", priority=150, body=DEFERRING_BODY))
    rt = bootstrap.init()
    assert rt.device_plugin == "picky"
    odd = AttentionSpec("float32", head_dim=40, num_heads=4, num_kv_heads=4)
    even = AttentionSpec("float32", head_dim=64, num_heads=4, num_kv_heads=4)
    assert rt.attention_backend(odd).name == "sdpa"
    assert rt.attention_resolutions[odd].plugin == "reference"
    assert rt.attention_backend(even).name == "picky-64"
    assert rt.attention_resolutions[even].plugin == "picky"
    plugin = rt.pm.get_plugin("picky")
    rt.attention_backend(odd)
    rt.attention_backend(even)
    assert type(plugin).calls == 2  # resolved once per spec, then cached


def test_bad_summary_setting_names_value_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLPORT_SUMMARY", "verbose")
    with pytest.raises(ConfigError) as info:
        bootstrap.init()
    assert "RLPORT_SUMMARY='verbose'" in info.value.message and "0, 1, json" in info.value.message
    assert info.value.fix == "export RLPORT_SUMMARY=1"


def test_init_is_idempotent() -> None:
    assert bootstrap.init() is bootstrap.init()


ALLOCATOR_BODY = """
    @rlport.hookimpl
    def rlport_allocator_settings(self, phase):
        from rlport.types import AllocatorSettings
        if phase == "training":
            return AllocatorSettings(env={"RLPORT_TEST_ALLOC": "expandable", "RLPORT_TEST_ALLOC2": "on"})
        return None
"""


def test_allocator_settings_applied_per_phase_and_user_value_wins(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("RLPORT_TEST_ALLOC", raising=False)
    monkeypatch.setenv("RLPORT_TEST_ALLOC2", "off")  # the user's own choice
    make_plugin(site, "alloc", device("alloc", priority=150, body=ALLOCATOR_BODY))
    rt = bootstrap.init()
    assert rt.apply_allocator_settings("rollout") == {}
    assert rt.apply_allocator_settings("training") == {"RLPORT_TEST_ALLOC": "expandable"}
    assert os.environ["RLPORT_TEST_ALLOC"] == "expandable" and os.environ["RLPORT_TEST_ALLOC2"] == "off"
    assert rt.allocator_overridden == {"RLPORT_TEST_ALLOC2": "off"}
    from rlport.summary import collect

    data = collect(rt)["resolved"]
    assert data["allocator"]["training"] == {"RLPORT_TEST_ALLOC": "expandable", "RLPORT_TEST_ALLOC2": "on"}
    assert data["allocator_overridden_by_user"] == {"RLPORT_TEST_ALLOC2": "off"}
    bootstrap.reset()
    assert "RLPORT_TEST_ALLOC" not in os.environ  # reset restores what rlport exported


WRAPPER_BODY = """
    @rlport.hookimpl(wrapper=True)
    def rlport_attention_backend(self, spec):
        backend = yield
        return backend
"""


def test_hook_wrappers_are_refused_with_the_fix(site: Path) -> None:
    make_plugin(site, "wrapping", device("wrapping", priority=150, body=WRAPPER_BODY))
    rt = bootstrap.init()
    wrapping = next(r for r in rt.records if r.name == "wrapping")
    assert wrapping.status == "broken"
    assert "declares hook wrappers (rlport_attention_backend)" in wrapping.reason
    assert "instead of wrapper=True" in wrapping.fix
    assert rt.device_plugin == "cpu"
