"""The README's Python examples that need nothing but the package run as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# the examples that read a user's files (their log, a log URL) are exercised by the tests of what they call
SELF_CONTAINED = [b for b in BLOCKS if "gym.make" in b or "Simulation(" in b]


def test_the_readme_has_self_contained_examples():
    assert len(SELF_CONTAINED) == 2


@pytest.mark.parametrize("block", SELF_CONTAINED, ids=["simulator", "policies"])
def test_a_readme_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
