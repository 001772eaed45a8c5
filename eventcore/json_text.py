"""JSON for storage hot paths: compact output, and parsing without the whitespace scans.

Stored JSON is always written by json_dumps (no surrounding whitespace), so the C scanner can be
called directly; this saves two regular-expression passes per document on every read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

json_dumps: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# The C scanner that JSONDecoder.decode calls after its whitespace scans (untyped in typeshed).
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_loads(text: str) -> Any:
    """Parse JSON text that json_dumps wrote."""
    value, end = _scan_once(text, 0)
    if end != len(text):
        raise ValueError(f"extra data after JSON value at character {end}")
    return value
