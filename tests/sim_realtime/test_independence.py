"""The simulator is an independent implementation: it never imports the service's protocol code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[2] / "fsbridge" / "sim"
FORBIDDEN = (
    "fsbridge.realtime",
    "fsbridge.esl",
    "fsbridge.fork",
    "fsbridge.audio.resample",
    "fsbridge.call",
    "fsbridge.service",
    "openai",
)
MODULES = sorted([SIM / "realtime.py", *SIM.glob("rt_*.py")])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"{path.name} imports {bad}"
    assert len(path.read_text().splitlines()) < 450, f"{path.name} is asking to be split"
