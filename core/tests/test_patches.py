"""The patch manager against real installed fixture plugins patching the fixture package ``patchme``
(its own distribution, version 1.2.0) and a real transformers class."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import patch_fixtures as fx
import pytest
from rich.console import Console

from rlport.errors import PatchError
from rlport.patches import PatchEvent, PatchManager, PatchRecord, event_line, render_table
from rlport.types import PatchSpec


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = fx.build(tmp_path_factory.mktemp("patch_fixtures"))
    sys.path.insert(0, str(root))
    yield root  # on sys.path only while this module's tests run: other tests must not see these plugins
    sys.path.remove(str(root))
    fx.forget_modules()


@pytest.fixture
def mgr(fixture_root: Path) -> Iterator[PatchManager]:
    fx.forget_modules()
    manager = PatchManager()
    yield manager
    manager.revert_all()
    fx.forget_modules()


def by_target(records: list[PatchRecord], plugin: str | None = None) -> dict[str, PatchRecord]:
    return {r.target: r for r in records if plugin is None or r.plugin == plugin}


def originals(core) -> dict[str, object]:
    return {
        "greet": vars(core)["greet"],
        "Greeter.greet": vars(core.Greeter)["greet"],
        "Greeter.norm": vars(core.Greeter)["norm"],
        "Greeter.make": vars(core.Greeter)["make"],
    }


def test_added_replaced_wrapped_applied_and_reverted_exactly(mgr: PatchManager) -> None:
    import patchme.core as core

    before = originals(core)
    records = mgr.apply_from_plugins(fx.plugin_manager("pbasic"), ["pbasic"])
    rec = by_target(records)
    assert [r.status for r in records] == ["applied"] * 6
    assert {t: (r.action, r.kind) for t, r in rec.items()} == {
        "patchme.core:Greeter.shout": ("added", "method"),
        "patchme.core:greet": ("replaced", "function"),
        "patchme.core:Greeter.greet": ("wrapped", "method"),
        "patchme.core:Greeter.norm": ("wrapped", "staticmethod"),
        "patchme.core:Greeter.make": ("replaced", "classmethod"),
        "patchme.core:Greeter.describe": ("wrapped", "method"),
    }
    plugin = sys.modules["rlport_pbasic"]
    g = core.Greeter()
    # added, replaced via the lazy "module:attr" path, wrapped: each is the object in effect
    assert vars(core.Greeter)["shout"] is plugin.shout
    assert core.greet is plugin.new_greet and core.greet("a") == "HELLO a"
    assert (
        g.greet("bob") == "[pbasic] hi bob"
        and vars(core.Greeter)["greet"].__wrapped__ is before["Greeter.greet"]
    )
    assert g.shout("bob") == "[PBASIC] HI BOB"
    # descriptors keep their type: the wrapper got the plain function back
    assert isinstance(vars(core.Greeter)["norm"], staticmethod)
    assert core.Greeter.norm("  x ") == "[norm] x"
    assert isinstance(vars(core.Greeter)["make"], classmethod)
    assert (
        vars(core.Greeter)["make"].__func__ is plugin.make_replacement
        and core.Greeter.make() == "made by pbasic"
    )
    # an inherited method is wrapped on the subclass only
    assert g.describe() == "[describe] base" and core.Base().describe() == "base"
    assert rec["patchme.core:Greeter.greet"].installed == "1.2.0"
    assert rec["patchme.core:Greeter.greet"].versions == ">=1.0,<2"

    assert mgr.revert_all() == []
    assert [r.status for r in mgr.records] == ["reverted"] * 6
    assert originals(core) == before  # dict equality over the same keys ...
    for key, value in originals(core).items():  # ... and identity for each
        assert value is before[key], key
    assert "shout" not in vars(core.Greeter) and not hasattr(core.Greeter, "shout")
    assert "describe" not in vars(core.Greeter) and core.Greeter().describe() == "base"
    assert core.Greeter().greet("bob") == "hi bob"


def test_second_call_applies_nothing_again(mgr: PatchManager) -> None:
    import patchme.core as core

    pm = fx.plugin_manager("pbasic")
    first = mgr.apply_from_plugins(pm, ["pbasic"])
    wrapped = vars(core.Greeter)["greet"]
    second = mgr.apply_from_plugins(pm, ["pbasic"])
    assert second == first and len(second) == 6
    assert vars(core.Greeter)["greet"] is wrapped
    assert core.Greeter().greet("a") == "[pbasic] hi a"  # wrapped once, not twice
    mgr.revert_all()
    again = mgr.apply_from_plugins(pm, ["pbasic"])  # after a revert the next call applies afresh
    assert [r.status for r in again] == ["applied"] * 6
    assert core.Greeter().greet("a") == "[pbasic] hi a"


def test_version_out_of_range_skipped_with_reason(mgr: PatchManager) -> None:
    import patchme.core as core

    before = core.greet
    records = by_target(mgr.apply_from_plugins(fx.plugin_manager("poldver"), ["poldver"]))
    skipped = records["patchme.core:greet"]
    assert skipped.status == "skipped"
    assert skipped.detail == (
        "patchme 1.2.0 is installed; the patch is known to be right for patchme>=2.0 only"
    )
    assert skipped.fix.startswith("pip install 'patchme>=2.0'")
    assert core.greet is before
    # a version skip does not block the plugin's other patches
    assert records["patchme.core:EXTRA"].status == "applied" and core.EXTRA == 42
    # a distribution that is not installed: skipped, but not a problem for doctor
    absent = records["patchme.core:Greeter.greet"]
    assert absent.status == "skipped" and absent.installed is None
    assert "not-installed-dist is not installed" in absent.detail
    problems = mgr.problems()
    assert len(problems) == 1
    finding, fix = problems[0]
    assert "patchme.core:greet" in finding and "patchme 1.2.0" in finding and ">=2.0" in finding
    assert fix == skipped.fix


def test_missing_target_fails_and_nothing_of_the_plugin_applies(mgr: PatchManager) -> None:
    import patchme.core as core

    before = core.greet
    records = by_target(mgr.apply_from_plugins(fx.plugin_manager("pmissing"), ["pmissing"]))
    missing = records["patchme.core:Greeter.nope"]
    assert missing.status == "failed"
    assert missing.detail == "patchme.core:Greeter.nope does not exist in patchme 1.2.0; nothing to replace"
    assert "pip install" in missing.fix
    other = records["patchme.core:greet"]
    assert other.status == "skipped" and other.blocked_by == "patchme.core:Greeter.nope"
    assert "not applied because patchme.core:Greeter.nope failed" in other.detail
    assert core.greet is before
    ((finding, fix),) = mgr.problems()
    assert "Greeter.nope" in finding and "1 other patch" in finding and fix == missing.fix


def test_added_target_that_exists_fails(mgr: PatchManager) -> None:
    import patchme.core as core

    (rec,) = mgr.apply_specs(
        "p", [PatchSpec("patchme.core:Greeter.describe", lambda self: "x", "added", "patchme", ">=1", "r")]
    )
    assert rec.status == "failed"
    assert "exists already in patchme 1.2.0 (defined on Base)" in rec.detail
    assert "describe" not in vars(core.Greeter)


def test_two_plugins_on_one_target_refused_naming_both(mgr: PatchManager) -> None:
    import patchme.core as core

    pm = fx.plugin_manager("pbasic", "prival")
    records = mgr.apply_from_plugins(pm, ["pbasic", "prival"])
    rival = by_target(records, "prival")["patchme.core:Greeter.greet"]
    assert rival.status == "failed"
    assert "already patched by plugin 'pbasic'" in rival.detail and "plugin 'prival'" in rival.detail
    assert "stacks_on='pbasic'" in rival.fix
    assert all(r.status == "applied" for r in records if r.plugin == "pbasic")
    assert core.Greeter().greet("a") == "[pbasic] hi a"  # the first plugin's patch is untouched


def test_second_plugin_stacks_on_first_and_reverts_in_order(mgr: PatchManager) -> None:
    import patchme.core as core

    original = vars(core.Greeter)["greet"]
    records = mgr.apply_from_plugins(fx.plugin_manager("pbasic", "pstack"), ["pbasic", "pstack"])
    stack = by_target(records, "pstack")["patchme.core:Greeter.greet"]
    assert stack.status == "applied" and stack.detail == "stacked on plugin 'pbasic''s patch"
    assert core.Greeter().greet("a") == "[stack] [pbasic] hi a"
    basic_wrapped = vars(core.Greeter)["greet"].__wrapped__
    assert basic_wrapped.__wrapped__ is original
    mgr.revert_all()
    assert vars(core.Greeter)["greet"] is original


def test_rollback_when_third_of_three_fails(mgr: PatchManager) -> None:
    import patchme.core as core

    before = originals(core)
    records = mgr.apply_from_plugins(fx.plugin_manager("pthree"), ["pthree"])
    assert [r.status for r in records] == ["skipped", "skipped", "failed"]
    assert records[2].detail == "the wrapper raised RuntimeError: kernel table missing"
    for rec in records[:2]:
        assert rec.detail == "rolled back because patchme.core:Greeter.norm failed"
    after = originals(core)
    for key in before:
        assert after[key] is before[key], key
    assert sys.modules["rlport_pthree"].CALLS == []
    assert core.greet("x") == "hello x"


def test_module_imported_after_apply_is_patched_on_import(mgr: PatchManager) -> None:
    assert "patchme.late" not in sys.modules
    records = mgr.apply_from_plugins(fx.plugin_manager("plate"), ["plate"])
    assert [r.status for r in records] == ["pending", "pending"]
    assert records[0].detail == "applies when patchme.late is first imported"
    assert "patchme.late" not in sys.modules  # applying did not import it
    assert any(type(f).__name__ == "PendingFinder" for f in sys.meta_path)

    import patchme.late as late

    assert [r.status for r in mgr.records] == ["applied", "applied"]
    assert [r.kind for r in mgr.records] == ["function", "method"]
    assert late.compute(1) == 102 and late.Calc().double(2) == 40
    assert sys.modules["rlport_plate"].CALLS == ["compute"]
    assert late.IMPORTS == ["late"]  # the module body ran once
    assert late.__loader__.__class__.__name__ != "PatchingLoader"  # the real loader again
    assert not any(type(f).__name__ == "PendingFinder" for f in sys.meta_path)  # nothing pending
    original = late.compute.__closure__[0].cell_contents
    mgr.revert_all()
    assert late.compute is original and late.compute(1) == 2


def test_pending_patch_failing_on_import_rolls_back_the_whole_plugin(mgr: PatchManager) -> None:
    import patchme.core as core

    original = core.greet
    events: list[PatchEvent] = []
    mgr.set_reporter(events.append)
    records = mgr.apply_from_plugins(fx.plugin_manager("platebad"), ["platebad"])
    assert [r.status for r in records] == ["applied", "pending", "pending", "pending"]
    assert core.greet("x") == "[bad] hello x"
    assert mgr.problems() == []  # nothing is known to be wrong yet
    import patchme.later as later

    greet, compute, triple, quadruple = mgr.records
    assert quadruple.status == "failed" and quadruple.late
    assert quadruple.detail == "patchme.later:quadruple does not exist in patchme 1.2.0; nothing to wrap"
    # all or nothing per plugin, also for a late failure: the patch applied at init is rolled back ...
    assert greet.status == "skipped" and greet.blocked_by == "patchme.later:quadruple"
    assert (
        greet.detail == "rolled back because patchme.later:quadruple failed when patchme.later was imported"
    )
    assert core.greet is original and core.greet("x") == "hello x"
    # ... and the plugin's other pending patches, of this module and of others, will not apply
    assert triple.status == compute.status == "skipped"
    assert compute.detail == (
        "not applied because patchme.later:quadruple failed when patchme.later was imported "
        "(all or nothing per plugin)"
    )
    assert later.triple(2) == 6
    assert not any(type(f).__name__ == "PendingFinder" for f in sys.meta_path)
    import patchme.late as late

    assert late.compute(1) == 2 and compute.status == "skipped"
    # one event, with everything it changed and the state afterwards
    (event,) = events
    assert (event.module, event.plugin, event.outcome) == ("patchme.later", "platebad", "failed")
    assert event.failed is not None and event.failed.target == "patchme.later:quadruple"
    assert sorted(r.target for r in event.changed) == sorted(r.target for r in mgr.records)
    assert [r.status for r in event.records] == ["skipped", "skipped", "skipped", "failed"]
    ((finding, fix),) = mgr.problems()
    assert finding.startswith(
        "patch patchme.later:quadruple of plugin 'platebad' failed when patchme.later was"
    )
    assert "(so 3 other patch(es) of 'platebad' are not in effect)" in finding
    assert fix == quadruple.fix and "pip install" in fix


def test_late_failure_in_strict_mode_fails_the_import_naming_patch_error_and_fix(mgr: PatchManager) -> None:
    import patchme.core as core

    original = core.greet
    mgr.apply_from_plugins(fx.plugin_manager("platebad"), ["platebad"], strict=True)
    with pytest.raises(PatchError) as info:
        import patchme.later  # noqa: F401
    message = info.value.message
    assert message.startswith("RLPORT_STRICT: patch patchme.later:quadruple of plugin 'platebad' failed when")
    assert "patchme.later:quadruple does not exist in patchme 1.2.0; nothing to wrap" in message
    assert "the plugin's other patches were rolled back" in message
    assert info.value.fix == mgr.records[3].fix and info.value.fix.startswith(
        "pip install -U rlport-platebad"
    )
    assert core.greet is original
    assert "patchme.later" not in sys.modules  # the import failed


def test_late_apply_is_one_event_with_the_final_state(mgr: PatchManager) -> None:
    events: list[PatchEvent] = []
    mgr.set_reporter(events.append)
    mgr.apply_from_plugins(fx.plugin_manager("pdemo"), ["pdemo"])
    assert events == []  # decided at apply time: part of the summary, no event
    import patchme.late  # noqa: F401

    (event,) = events
    assert (event.module, event.plugin, event.outcome, event.failed) == (
        "patchme.late",
        "pdemo",
        "applied",
        None,
    )
    assert [(r.target, r.status) for r in event.changed] == [("patchme.late:compute", "applied")]
    data = json.loads(json.dumps(event.to_dict()))
    assert data["patch_event"] == {
        "module": "patchme.late",
        "plugin": "pdemo",
        "outcome": "applied",
        "failed": None,
        "changed": [mgr.records[3].to_dict()],
    }
    assert data["patches"] == mgr.to_json()
    assert [p["status"] for p in data["patches"]] == ["pending", "pending", "skipped", "applied"]
    assert event_line(event).plain == (
        "Patches: patchme.late imported, plugin pdemo: 1 applied (compute) · now 1 applied · 2 pending · 1 skipped"
    )


def test_a_reporter_that_raises_does_not_break_the_import(mgr: PatchManager) -> None:
    def broken(event: PatchEvent) -> None:
        raise RuntimeError("console gone")

    mgr.set_reporter(broken)
    mgr.apply_from_plugins(fx.plugin_manager("plate"), ["plate"])
    import patchme.late as late

    assert late.compute(1) == 102 and [r.status for r in mgr.records] == ["applied", "applied"]


def test_failed_event_line_names_the_patch_the_rollback_and_the_fix(mgr: PatchManager) -> None:
    events: list[PatchEvent] = []
    mgr.set_reporter(events.append)
    import patchme.core

    mgr.apply_from_plugins(fx.plugin_manager("platebad"), ["platebad"])
    import patchme.later  # noqa: F401

    (event,) = events
    assert event_line(event).plain == (
        "Patches: patchme.later imported, plugin platebad: patchme.later:quadruple failed: patchme.later:quadruple "
        "does not exist in patchme 1.2.0; nothing to wrap · 3 other patch(es) of platebad rolled back or not "
        f"applied (all or nothing per plugin) · fix: {mgr.records[3].fix} · now 3 skipped · 1 failed"
    )


def test_import_targets_decides_every_pending_patch(mgr: PatchManager) -> None:
    recs = mgr.apply_specs(
        "p",
        [
            PatchSpec(
                "patchme.late:compute", len, "replaced", "patchme", ">=1", "in a module not imported yet"
            ),
            PatchSpec("patchme.broken:thing", len, "replaced", "patchme", ">=1", "import raises"),
        ],
    )
    assert [r.status for r in recs] == ["pending", "pending"]
    errors = mgr.import_targets()
    assert errors == {"patchme.broken": "RuntimeError: patchme.broken needs a driver"}
    assert recs[0].status == "applied" and sys.modules["patchme.late"].compute is len
    # the module's own import error is not the patch's fault: it stays pending and says why
    assert recs[1].status == "pending"
    assert recs[1].detail == (
        "applies when patchme.broken is first imported; importing it raised patchme.broken needs a driver"
    )
    assert mgr.problems() == []


def test_import_targets_fails_a_patch_of_a_module_the_release_lacks(mgr: PatchManager) -> None:
    import patchme.core as core

    original = core.greet
    recs = mgr.apply_specs(
        "p",
        [
            PatchSpec("patchme.core:greet", len, "replaced", "patchme", ">=1", "applies at once"),
            PatchSpec("patchme.nosuch:thing", len, "replaced", "patchme", ">=1", "module renamed"),
        ],
        strict=True,
    )
    assert [r.status for r in recs] == ["applied", "pending"] and core.greet is len
    assert mgr.import_targets() == {"patchme.nosuch": "ModuleNotFoundError: No module named 'patchme.nosuch'"}
    assert (
        recs[1].status == "failed"
        and recs[1].detail == "module patchme.nosuch cannot be found in patchme 1.2.0"
    )
    assert recs[0].status == "skipped" and core.greet is original  # rolled back; strict did not raise here
    ((finding, _),) = mgr.problems()
    assert "patchme.nosuch:thing of plugin 'p' failed when patchme.nosuch was imported" in finding


def test_expected_skip_is_shown_but_neither_a_problem_nor_fatal(mgr: PatchManager) -> None:
    import patchme.core as core

    before = vars(core.Greeter)["norm"]
    records = by_target(mgr.apply_from_plugins(fx.plugin_manager("poldver"), ["poldver"]))
    compat = records["patchme.core:Greeter.norm"]
    assert compat.status == "skipped" and compat.expected_skip and compat.is_expected_skip
    assert compat.detail == (
        "expected: patchme 1.2.0 is installed; the patch is known to be right for patchme<1.0 only"
    )
    assert compat.fix == "" and not compat.is_problem
    assert vars(core.Greeter)["norm"] is before
    # the unexpected skip beside it stays a problem, with its fix
    assert [f for f, _ in mgr.problems()] == [
        "patch patchme.core:greet of plugin 'poldver' skipped: patchme 1.2.0 is installed; the patch is known "
        "to be right for patchme>=2.0 only"
    ]
    console = Console(record=True, width=200, color_system=None)
    console.print(render_table(mgr.records))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0] == "Patches: 1 applied · 2 skipped · 1 skipped as expected"
    assert any(
        line.endswith(
            "skipped  expected: patchme 1.2.0 is installed; the patch is known to be right "
            "for patchme<1.0 only"
        )
        for line in lines
    ), lines


def test_expected_skip_does_not_stop_strict_mode_and_applies_when_in_range(mgr: PatchManager) -> None:
    import patchme.core as core

    compat = dict(distribution="patchme", reason="compat", expected_skip=True)
    recs = mgr.apply_specs(
        "p",
        [
            PatchSpec("patchme.core:greet", len, "replaced", versions="<1.0", **compat),
            PatchSpec("patchme.core:Greeter.norm", len, "replaced", versions=">=1.0", **compat),
        ],
        strict=True,
    )
    assert [r.status for r in recs] == ["skipped", "applied"]
    assert core.greet("x") == "hello x" and core.Greeter.norm is len
    # only the version gate may be an expected skip: a failure stays a failure, fatal when strict
    with pytest.raises(PatchError, match=r"Greeter\.nope does not exist"):
        mgr.apply_specs(
            "q",
            [PatchSpec("patchme.core:Greeter.nope", len, "replaced", versions=">=1", **compat)],
            strict=True,
        )


def test_revert_all_removes_pending_hook(mgr: PatchManager) -> None:
    mgr.apply_from_plugins(fx.plugin_manager("plate"), ["plate"])
    mgr.revert_all()
    assert [r.status for r in mgr.records] == ["reverted", "reverted"]
    import patchme.late as late

    assert late.compute(1) == 2


def test_strict_mode_raises_and_rolls_back(mgr: PatchManager) -> None:
    import patchme.core as core

    before = core.greet
    with pytest.raises(PatchError) as info:
        mgr.apply_from_plugins(fx.plugin_manager("poldver"), ["poldver"], strict=True)
    assert "patchme.core:greet" in info.value.message and "patchme 1.2.0" in info.value.message
    assert info.value.fix.startswith("pip install 'patchme>=2.0'")
    assert core.greet is before and not hasattr(core, "EXTRA")  # the in-range patch was rolled back
    with pytest.raises(PatchError, match=r"Greeter\.nope"):
        mgr.apply_from_plugins(fx.plugin_manager("pmissing"), ["pmissing"], strict=True)


def test_overwrite_after_apply_is_reported_not_reverted(mgr: PatchManager) -> None:
    import patchme.core as core

    mgr.apply_from_plugins(fx.plugin_manager("pbasic"), ["pbasic"])

    def someone_else(name: str) -> str:
        return "other"

    core.greet = someone_else  # the silent overwrite of a patched function
    problems = mgr.problems()
    assert len(problems) == 1 and "patchme.core:greet" in problems[0][0]
    assert "other code replaced it" in problems[0][0]
    stuck = mgr.revert_all()
    assert [r.target for r in stuck] == []  # already failed by verify(); not touched by revert
    assert core.greet is someone_else


def test_hook_that_raises_is_a_failed_record(mgr: PatchManager) -> None:
    import rlport

    class Broken:
        @rlport.hookimpl
        def rlport_patches(self):
            raise ValueError("bad table")

    pm = fx.plugin_manager()
    pm.register(Broken(), name="broken")
    (rec,) = mgr.apply_from_plugins(pm, ["broken"])
    assert rec.status == "failed" and rec.detail == "rlport_patches() raised ValueError: bad table"


def test_bad_declarations_fail_with_reason(mgr: PatchManager) -> None:
    recs = mgr.apply_specs(
        "p",
        [
            PatchSpec("patchme.core.greet", len, "replaced", "patchme", ">=1", "no colon"),
            PatchSpec("patchme.core:greet", len, "deleted", "patchme", ">=1", "bad action"),  # type: ignore[arg-type]
            PatchSpec("patchme.core:Greeter.greet", len, "replaced", "patchme", "1.0+", "bad range"),
            PatchSpec("patchme.core:Greeter.norm", len, "replaced", "patchme", ">=1", "fine but blocked"),
            PatchSpec("patchme.core:Greeter.norm", len, "replaced", "patchme", ">=1", "declared twice"),
        ],
    )
    assert [r.status for r in recs] == ["failed", "failed", "failed", "skipped", "failed"]
    assert "is not of the form 'package.module:Attr.sub'" in recs[0].detail
    assert "action 'deleted' is not one of added, replaced, wrapped" in recs[1].detail
    assert "is not a valid version range" in recs[2].detail
    assert recs[3].blocked_by == "patchme.core.greet"
    assert recs[4].detail == "'p' declares patchme.core:Greeter.norm twice"
    assert "patchme.core" not in sys.modules  # nothing was imported to find that out


def test_lazy_replacement_that_cannot_be_imported_fails(mgr: PatchManager) -> None:
    import patchme.core as core

    before = core.greet
    (rec,) = mgr.apply_specs(
        "p", [PatchSpec("patchme.core:greet", "nowhere_module:x", "replaced", "patchme", ">=1", "r")]
    )
    assert rec.status == "failed" and "could not be imported: ModuleNotFoundError" in rec.detail
    assert core.greet is before


def test_json_and_rendered_summary(mgr: PatchManager) -> None:
    import patchme.core  # noqa: F401

    mgr.apply_from_plugins(fx.plugin_manager("pdemo", "pmissing"), ["pdemo", "pmissing"])
    data = json.loads(json.dumps(mgr.to_json()))
    assert [(d["plugin"], d["target"], d["status"]) for d in data] == [
        ("pdemo", "patchme.core:Greeter.greet", "applied"),
        ("pdemo", "patchme.core:Greeter.shout", "applied"),
        ("pdemo", "patchme.core:greet", "skipped"),
        ("pdemo", "patchme.late:compute", "pending"),
        ("pmissing", "patchme.core:greet", "skipped"),
        ("pmissing", "patchme.core:Greeter.nope", "failed"),
    ]
    console = Console(record=True, width=220, color_system=None)
    console.print(render_table(mgr.records))
    out = console.export_text()
    assert "Patches: 2 applied · 1 pending · 2 skipped · 1 failed" in out
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[:3] == [
        "Patches: 2 applied · 1 pending · 2 skipped · 1 failed",
        "plugin pdemo",
        "  patchme.core  (patchme 1.2.0)",
    ]
    assert lines[3] == "    Greeter"
    for text in (
        "      greet wrapped  method       applied  for patchme>=1.0,<2",
        "            why: route greet through the device's fused kernel",
        "            upstream: patchme#7 · remove when: patchme>=2 ships the kernel",
        "      shout added    method       applied  for patchme>=1.0,<2",
        "    greet   replaced function     skipped  patchme 1.2.0 is installed; the patch is known to be right "
        "for patchme>=2.0 only",
        "  patchme.late  (patchme 1.2.0)",
        "    compute wrapped               pending  applies when patchme.late is first imported",
        "plugin pmissing",
        "      nope  replaced              failed   patchme.core:Greeter.nope does not exist in patchme 1.2.0; "
        "nothing to replace",
        "    greet   wrapped  function     skipped  not applied because patchme.core:Greeter.nope failed "
        "(all or nothing per plugin)",
        "run `rlport doctor` for the fix of each skipped or failed patch",
    ):
        assert text in lines, text
    # the table is the manager's own rendering too
    console2 = Console(record=True, width=220, color_system=None)
    mgr.render(console2)
    assert console2.export_text() == out


def test_real_transformers_class_wrapped_and_reverted(mgr: PatchManager) -> None:
    import torch

    was_loaded = "transformers.models.qwen2.modeling_qwen2" in sys.modules
    (rec,) = mgr.apply_from_plugins(fx.plugin_manager("pqwen"), ["pqwen"])
    assert rec.status == ("applied" if was_loaded else "pending")
    modeling = importlib.import_module("transformers.models.qwen2.modeling_qwen2")
    (rec,) = mgr.records
    assert rec.status == "applied" and rec.kind == "method" and rec.distribution == "transformers"
    import transformers

    assert rec.installed == transformers.__version__
    calls = sys.modules["rlport_pqwen"].CALLS
    norm = modeling.Qwen2RMSNorm(8)
    wrapper = vars(modeling.Qwen2RMSNorm)["forward"]
    x = torch.ones(2, 3, 8)
    y = norm(x)
    assert calls == [(2, 3, 8)] and y.shape == (2, 3, 8)
    mgr.revert_all()
    assert vars(modeling.Qwen2RMSNorm)["forward"] is not wrapper
    assert torch.equal(norm(x), y) and calls == [(2, 3, 8)]  # the original again, no wrapper call


def test_refresh_applies_pending_patches_of_a_module_imported_behind_the_hook(mgr: PatchManager) -> None:
    mgr.apply_from_plugins(fx.plugin_manager("plate"), ["plate"])
    finder = next(f for f in sys.meta_path if type(f).__name__ == "PendingFinder")
    sys.meta_path.remove(finder)  # as if a loader the hook cannot wrap had imported it
    try:
        import patchme.late as late
    finally:
        sys.meta_path.insert(0, finder)
    assert [r.status for r in mgr.records] == ["pending", "pending"] and late.compute(1) == 2
    changed = mgr.refresh()
    assert [r.status for r in changed] == ["applied", "applied"] and late.compute(1) == 102
    assert finder not in sys.meta_path
