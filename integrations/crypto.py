"""Symmetric encryption of credentials at rest (Fernet, with key rotation).

``settings.FIELD_ENCRYPTION_KEYS`` lists Fernet keys: the first encrypts, every key
decrypts, so a new key is rolled out by putting it first and keeping the old ones until
``rotate_text`` has re-encrypted every stored value.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(ValueError):
    """A stored value could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS (ZENITH_FIELD_KEYS) is empty")
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured("ZENITH_FIELD_KEYS must be url-safe base64 Fernet keys") from exc


def _current() -> MultiFernet:
    # Keyed by the settings value, so override_settings and key rotation take effect at once.
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def is_token(value: str) -> bool:
    """Whether ``value`` looks like a Fernet token (version byte 0x80, base64 "gAAAAA")."""
    return value.startswith("gAAAAA")


def encrypt_text(value: str) -> str:
    """Encrypt ``value`` with the first configured key; returns a Fernet token."""
    return _current().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt_text(token: str) -> str:
    """Decrypt a Fernet token made with any configured key."""
    try:
        return _current().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise DecryptionError(
            "cannot decrypt a stored credential: is its key still in ZENITH_FIELD_KEYS?"
        ) from exc


def rotate_text(token: str) -> str:
    """Re-encrypt a token with the first configured key (for key rotation)."""
    try:
        return _current().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise DecryptionError("cannot rotate a credential no configured key decrypts") from exc
