"""Benchmarks import project names inside their GPU-only functions, which CI never runs: check that
every ``from propforge... import name`` in benchmarks/ still resolves (a rename once broke one)."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCH, ids=lambda p: p.name)
def test_benchmark_project_imports_resolve(path: Path):
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("propforge",
                                                                                              "propforge_server"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names
                        if not hasattr(module, a.name) and not _is_submodule(node.module, a.name)]
    assert not missing, f"{path.name} imports names that no longer exist: {missing}"


def _is_submodule(package: str, name: str) -> bool:
    try:
        importlib.import_module(f"{package}.{name}")
        return True
    except ImportError:
        return False
