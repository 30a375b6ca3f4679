"""Waivers: a file naming cases that may fail on one device, each with an issue link.

YAML (needs PyYAML) or JSON, either a list or ``{"waivers": [...]}``; each entry::

    device: "cpu"                     # glob over the plugin name, device type and device name
    case: "attention.forward[float16-*]"   # glob over case ids
    issue: "https://github.com/org/repo/issues/12"   # required, http(s) URL
    reason: "fp16 softmax overflows on this part"      # optional

A waived case keeps its original status in ``waiver.original_status``; only cases whose status is not
allowed are waived (a missing case is never waived: waived cases must still run).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.errors import ConfigError
from rlport_conformance.status import Status, is_allowed


@dataclass(frozen=True)
class Waiver:
    device: str
    case: str
    issue: str
    reason: str = ""

    def matches_device(self, plugin: dict[str, Any], environment: dict[str, Any]) -> bool:
        names = [plugin.get("name"), environment.get("device_type"), environment.get("device")]
        return any(n and fnmatch.fnmatchcase(str(n), self.device) for n in names)


def load(path: Path | str) -> list[Waiver]:
    """Read and validate a waiver file; errors name the entry and the fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read waiver file {str(p)!r}: {exc}", "pass an existing file with --waivers"
        ) from exc
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(
                "a YAML waiver file needs PyYAML", "pip install pyyaml, or write the file as JSON"
            ) from exc
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    entries = data.get("waivers", []) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigError(
            f"waiver file {str(p)!r} holds {type(entries).__name__}, expected a list of waivers",
            "write a list of {device, case, issue, reason} entries",
        )
    waivers = []
    for i, entry in enumerate(entries):
        missing = [k for k in ("device", "case", "issue") if not isinstance(entry, dict) or not entry.get(k)]
        if missing:
            raise ConfigError(
                f"waiver {i} in {str(p)!r} lacks {', '.join(missing)}",
                "give every waiver a device glob, a case id glob and an issue URL",
            )
        if not str(entry["issue"]).startswith(("http://", "https://")):
            raise ConfigError(
                f"waiver {i} in {str(p)!r} has issue {entry['issue']!r}, not a URL",
                "link the issue that tracks the problem, e.g. https://github.com/org/repo/issues/12",
            )
        waivers.append(
            Waiver(
                str(entry["device"]), str(entry["case"]), str(entry["issue"]), str(entry.get("reason", ""))
            )
        )
    return waivers


def apply(
    waivers: list[Waiver], results: list[dict[str, Any]], plugin: dict[str, Any], environment: dict[str, Any]
) -> int:
    """Mark every matching not-allowed result WAIVED (in place); return how many."""
    applicable = [w for w in waivers if w.matches_device(plugin, environment)]
    count = 0
    for result in results:
        status = result["status"]
        if status == Status.MISSING.value or is_allowed(status, claimed=result.get("claimed", True)):
            continue
        waiver = next((w for w in applicable if fnmatch.fnmatchcase(result["id"], w.case)), None)
        if waiver is None:
            continue
        result["waiver"] = {
            "device": waiver.device,
            "case": waiver.case,
            "issue": waiver.issue,
            "reason": waiver.reason,
            "original_status": status,
        }
        result["status"] = Status.WAIVED.value
        count += 1
    return count
