"""Every hook is specified with a contract and documented with an example (as datasette does)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from rlport import hookspecs

SPECS = [
    name for name, fn in vars(hookspecs).items() if name.startswith("rlport_") and inspect.isfunction(fn)
]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugin_hooks.md"


def test_there_are_hooks_for_every_area() -> None:
    assert len(SPECS) == 15


@pytest.mark.parametrize("name", SPECS)
def test_spec_says_when_called_and_how_answers_combine(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert "Called" in doc, f"{name}: say when it is called"
    assert ":return:" in doc, f"{name}: say what it returns"
    first = getattr(hookspecs, name).rlport_spec["firstresult"]
    says_first = "First answer wins" in doc
    assert first == says_first, f"{name}: firstresult={first} but the docstring says otherwise"


@pytest.mark.parametrize("name", SPECS)
def test_hook_is_documented_with_an_example(name: str) -> None:
    text = DOCS.read_text()
    heading = f"### {name}("
    assert heading in text, f"docs/plugin_hooks.md lacks a section for {name}"
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    assert f"def {name}(" in section, f"the {name} section has no example implementation"
