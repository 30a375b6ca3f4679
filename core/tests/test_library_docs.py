"""Every ```python block of docs/library.md runs as written, each as a program in a fresh
interpreter, and exits 0 (each asserts its own result, so a drifted example fails here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "library.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, str]]:
    """``(section heading, code)`` for each python block, in order."""
    text = DOC.read_text()
    found = []
    for match in BLOCK.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
        found.append((headings[-1] if headings else "top", match.group(1)))
    return found


EXAMPLES = examples()


def test_every_area_has_an_example() -> None:
    sections = [heading for heading, _ in EXAMPLES]
    assert sections == [
        "The device",
        "Attention through transformers",
        "Attention directly",
        "A process group",
        "Sleep and wake tagged tensors",
        "A rollout engine by name",
        "Weight updates",
    ]


@pytest.mark.parametrize(("heading", "code"), EXAMPLES, ids=[h for h, _ in EXAMPLES])
def test_example_runs(heading: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLPORT_")}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"example {heading!r} failed:\n{result.stdout}\n{result.stderr}"
