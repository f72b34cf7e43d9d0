"""Every PROPFORGE_* variable the code reads is documented in docs/environment.md, and nothing else is."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"PROPFORGE_[A-Z0-9_]*[A-Z0-9]")


def names_in(paths) -> set[str]:
    return {m for p in paths for m in NAME.findall(p.read_text(encoding="utf-8"))}


def test_environment_doc_matches_the_code():
    code = names_in(p for d in ("core", "server") for p in (ROOT / d).rglob("*.py"))
    doc = names_in([ROOT / "docs" / "environment.md"])
    assert code, "no PROPFORGE_* variables found in the code: the pattern is wrong"
    assert code - doc == set(), f"read by the code but not documented: {sorted(code - doc)}"
    assert doc - code == set(), f"documented but never read: {sorted(doc - code)}"
