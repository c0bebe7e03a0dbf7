"""The README's Python snippets run as written (blocks marked ```python notest need a network or an API key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs(code, backend):
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


def test_readme_has_runnable_snippets():
    assert len(BLOCKS) >= 3
