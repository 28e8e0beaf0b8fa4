"""The `state` of an OAuth consent (Slack install, mailbox consent) and the callback's checks.

A callback's query comes from whoever sent the browser there, so only a value shaped like
a state Zenith issued is looked up, and the provider's `error` is shown as a short code.
"""

from __future__ import annotations

import re
import secrets

# secrets.token_urlsafe(32) gives 43 characters; older or other issuers stay within this.
_STATE = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Providers' error codes are short identifiers ("access_denied", "consent_required").
_NOT_IN_CODE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_ERROR_CODE_CHARS = 64


def state_new() -> str:
    """A fresh, unguessable state value."""
    return secrets.token_urlsafe(32)


def state_is_well_formed(value: object) -> bool:
    """Whether `value` could be a state Zenith issued (not oversized, no NUL or odd bytes)."""
    return isinstance(value, str) and _STATE.fullmatch(value) is not None


def error_code(value: object) -> str:
    """A provider's error parameter as a short code, safe to show and to log."""
    code = _NOT_IN_CODE.sub("", str(value or ""))[:MAX_ERROR_CODE_CHARS]
    return code or "unknown"
