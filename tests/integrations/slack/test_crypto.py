"""Bot tokens are encrypted at rest: Fernet tokens in the table, rotation across keys."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from integrations.crypto import DecryptionError, decrypt_text, encrypt_text, rotate_text
from integrations.models import SlackWorkspace

TOKEN = "xoxb-1234-5678-secretsecret"


def _stored(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT bot_token FROM integrations_slackworkspace WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_the_table_holds_a_fernet_token_not_the_plaintext(organization):
    workspace = SlackWorkspace.objects.create(
        organization=organization, team_id="T1", bot_token=TOKEN
    )

    raw = _stored(workspace.pk)

    assert TOKEN not in raw
    assert raw.startswith("gAAAAA")
    assert SlackWorkspace.objects.get(pk=workspace.pk).bot_token == TOKEN


def test_first_key_encrypts_and_every_key_decrypts(organization, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    workspace = SlackWorkspace.objects.create(
        organization=organization, team_id="T1", bot_token=TOKEN
    )
    under_old = _stored(workspace.pk)

    settings.FIELD_ENCRYPTION_KEYS = [new, old]

    assert SlackWorkspace.objects.get(pk=workspace.pk).bot_token == TOKEN
    rotated = rotate_text(under_old)
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert decrypt_text(rotated) == TOKEN
    with pytest.raises(DecryptionError, match="ZENITH_FIELD_KEYS"):
        decrypt_text(under_old)


def test_encryption_is_not_deterministic_and_empty_stays_empty(organization):
    assert encrypt_text(TOKEN) != encrypt_text(TOKEN)
    workspace = SlackWorkspace.objects.create(organization=organization, team_id="T1")
    assert _stored(workspace.pk) == ""
