"""JUnit XML for CI systems: one ``testsuite`` per group, one ``testcase`` per case; statuses not
allowed become ``failure`` (or ``error`` for CRASH/TIMEOUT/RESOURCE_ERROR/INTERNAL_ERROR), MISSING and
NOT_SUPPORTED become ``skipped`` with the reason, so a CI view shows what the verdict shows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rlport_conformance.status import Status, is_allowed

_ERRORS = {Status.CRASH.value, Status.TIMEOUT.value, Status.RESOURCE_ERROR.value, Status.INTERNAL_ERROR.value}


def to_xml(report: dict[str, Any]) -> ET.ElementTree:
    root = ET.Element("testsuites", name="rlport-conformance", verdict=report["summary"]["verdict"])
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in report["results"]:
        groups.setdefault(r["group"], []).append(r)
    for group, results in groups.items():
        suite = ET.SubElement(root, "testsuite", name=group, tests=str(len(results)))
        failures = errors = skipped = 0
        for r in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"rlport_conformance.{group}",
                name=r["id"],
                time=f"{r.get('seconds') or 0:.3f}",
            )
            message = f"{r['status']}: {r.get('message') or ''}"
            if r["status"] == Status.MISSING.value:
                ET.SubElement(case, "skipped", message=message)
                skipped += 1
            elif not is_allowed(r["status"], claimed=r.get("claimed", True)):
                tag = "error" if r["status"] in _ERRORS else "failure"
                ET.SubElement(case, tag, message=message, type=r["status"])
                failures += tag == "failure"
                errors += tag == "error"
            elif r["status"] == Status.NOT_SUPPORTED.value:
                ET.SubElement(case, "skipped", message=message)
                skipped += 1
            elif r["status"] != Status.PASS.value:
                ET.SubElement(case, "system-out").text = message
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", str(skipped))
    return ET.ElementTree(root)


def write(report: dict[str, Any], path: Path | str) -> None:
    tree = to_xml(report)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
