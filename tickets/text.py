"""Text and JSON from outside (mail, Slack, API bodies) made storable and bounded.

PostgreSQL keeps no NUL character and UTF-8 has no lone surrogates, so either one in a
value would fail the whole write; deeply nested JSON only makes validation recurse."""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls except TAB/LF/CR, plus DEL.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def storable_text(text: str) -> str:
    """`text` without control characters, lone surrogates shown as U+FFFD."""
    return _CONTROL.sub("", _SURROGATE.sub("\ufffd", text))


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def storable_json(value: Any) -> Any:
    """A parsed JSON document with every string (keys too) made storable in jsonb."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(key)): storable_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_json(item) for item in value]
    return value


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a parsed JSON document (a scalar is 0)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest
