"""Placeholder: Triton hash-table lookup comes in the next commit."""
from __future__ import annotations


def hash_available() -> bool:
    return False
