"""Text from outside (mail, Slack) made storable: PostgreSQL keeps no NUL character and
UTF-8 has no lone surrogates, so either one in a value would fail the whole write."""

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
