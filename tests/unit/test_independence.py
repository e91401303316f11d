"""The simulators and the service are independent implementations of the two sides of each wire.

Shared code would let one bug hide on both sides, so: nothing under fsbridge/sim imports the
service's protocol, audio-resampling, call or service modules, and no service module imports the
simulators (only the CLI's demo/bench/sim paths and the tests do).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "fsbridge"
SIM_FORBIDDEN = (
    "fsbridge.esl",
    "fsbridge.fork",
    "fsbridge.realtime",
    "fsbridge.audio.resample",
    "fsbridge.audio.pcm",
    "fsbridge.call",
    "fsbridge.service",
    "fsbridge.config",
)
MAY_IMPORT_SIM = {"cli.py", "demo.py", "bench.py", "replay.py"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent).with_suffix("")
    package = ".".join(rel.parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_simulators_import_no_service_code() -> None:
    for path in (PKG / "sim").glob("*.py"):
        bad = {m for m in imports(path) if m.startswith(SIM_FORBIDDEN)}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_service_never_imports_the_simulators() -> None:
    for path in PKG.rglob("*.py"):
        if "sim" in path.relative_to(PKG).parts or path.name in MAY_IMPORT_SIM:
            continue
        bad = {m for m in imports(path) if m.startswith("fsbridge.sim")}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"
