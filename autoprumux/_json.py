"""Limits on parsed JSON that both HTTP servers apply before trusting a payload."""

from __future__ import annotations

from typing import Any


def json_depth(v: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, without recursion; stops counting past `limit`."""
    deepest = 0
    stack = [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict | list):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((c, d + 1) for c in (x.values() if isinstance(x, dict) else x))
    return deepest
