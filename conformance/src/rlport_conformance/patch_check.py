"""Run in a fresh subprocess by the ``patches.roundtrip`` case: every patch the active plugins declare
applies, verifies, and reverts to the original object, identity for identity.

Before ``rlport.init()`` it asks each active plugin for its declared patches and records the original
object at every target (importing the target modules first, so patches apply at init rather than
waiting for an import). Then it initialises, imports anything still pending, checks each record,
reverts everything and compares every target with its original. Around this, the model families
named on the command line are run unpatched and patched (:mod:`rlport_conformance.patch_equivalence`).
Prints one JSON object.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

_ABSENT = object()


def _lookup(target: str) -> Any:
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split(".") if qualname else []:
        obj = obj.__dict__.get(part, _ABSENT) if hasattr(obj, "__dict__") else getattr(obj, part, _ABSENT)
        if obj is _ABSENT:
            return _ABSENT
    return obj


def _target(plugin: str, spec: Any, found: Any) -> dict[str, Any]:
    """Whether ``spec``'s target exists in the installed version of its distribution (for an
    ``added`` patch: whether its parent exists and the name is still free), where that version is
    one the patch declares itself right for."""
    from importlib import metadata

    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        installed: str | None = metadata.version(spec.distribution)
    except metadata.PackageNotFoundError:
        installed = None
    try:
        in_range = installed is not None and SpecifierSet(spec.versions).contains(
            Version(installed), prereleases=True
        )
    except (InvalidSpecifier, InvalidVersion):
        in_range = False
    exists = found is not _ABSENT
    if spec.action == "added":
        module_name, _, qualname = spec.target.partition(":")
        parent = module_name + (":" + qualname.rsplit(".", 1)[0] if "." in qualname else "")
        try:
            parent_found = _lookup(parent) is not _ABSENT
        except ImportError:
            parent_found = False
        ok = parent_found and not exists
    else:
        ok = exists
    return {
        "plugin": plugin,
        "target": spec.target,
        "action": spec.action,
        "distribution": spec.distribution,
        "versions": spec.versions,
        "installed": installed,
        "in_range": in_range,
        "exists": exists,
        "ok": ok,
    }


def main(families: list[str]) -> int:
    os.environ["RLPORT_SUMMARY"] = "0"
    from rlport import bootstrap
    from rlport.runtime import Runtime
    from rlport.selection import select
    from rlport_conformance import patch_equivalence

    out: dict[str, Any] = {"patches": [], "problems": []}
    settings, records = bootstrap.build()
    selection = select(records, settings)
    # The device is made known to torch first (the device plugin's device info may register a
    # PrivateUse1 backend): torch's autograd engine sizes its per-device queues at the first
    # backward, which the unpatched reference below runs. Patches are applied only by init.
    Runtime(settings, records, selection)
    before = patch_equivalence.unpatched(families)
    originals: dict[str, Any] = {}
    out["targets"] = []
    for record in selection.active:
        hook = getattr(record.obj, "rlport_patches", None)
        specs = (hook() or []) if callable(hook) else []
        for spec in specs:
            try:
                originals[spec.target] = _lookup(spec.target)
            except ImportError:
                originals[spec.target] = _ABSENT  # its distribution is not installed
            out["targets"].append(_target(record.name, spec, originals[spec.target]))
    import rlport
    from rlport.patches import get_manager, revert_all

    rt = rlport.init()
    manager = get_manager()
    manager.import_targets()  # every pending patch decided, as at the model's import
    overwritten = manager.verify()
    out["equivalence"] = {
        "device": rt.torch_device(),
        "applied": [r.target for r in manager.records if r.status == "applied"],
        "families": patch_equivalence.patched(before, rt.torch_device()),
    }
    for rec in manager.records:
        entry = {
            "plugin": rec.plugin,
            "target": rec.target,
            "action": rec.action,
            "status": rec.status,
            "detail": rec.detail,
            "distribution": rec.distribution,
            "installed": rec.installed,
            "expected_skip": rec.expected_skip,
        }
        out["patches"].append(entry)
    out["overwritten"] = [r.target for r in overwritten]
    stuck = revert_all()
    out["stuck"] = [r.target for r in stuck]
    for entry in out["patches"]:
        if entry["status"] != "applied":
            continue
        original = originals.get(entry["target"], _ABSENT)
        try:
            now = _lookup(entry["target"])
        except ImportError as exc:
            out["problems"].append(f"{entry['target']}: cannot look up after revert: {exc}")
            continue
        if now is not original:
            out["problems"].append(
                f"{entry['target']}: after revert the object is {now!r}, not the original {original!r}"
                if original is not _ABSENT
                else f"{entry['target']}: added, but still present after revert"
            )
    out["reverted"] = [r.target for r in manager.records if r.status == "reverted"]
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
