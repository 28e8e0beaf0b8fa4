"""The original of every ingested message is kept, compressed, for the retention period."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.email import services as email_services
from integrations.models import InboundEmail, Mailbox
from taskops.services import task_records_cleanup
from tests.integrations.email.conftest import append_all
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tickets.models import Organization, Role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.dovecot]


def _client(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_originals_are_kept_compressed_served_to_admins_only_and_pruned_after_retention(
    mailbox: Mailbox,
    imap_account: ImapAccount,
    organization: Organization,
    other_organization: Organization,
    make_user: Callable[..., Any],
    settings: Any,
) -> None:
    broken = b"From: x@example.com\r\nContent-Type: multipart/mixed\r\n\r\n\xff\xfe no boundary"
    sent = [samples.plain(subject="Printer on fire"), broken]
    append_all(imap_account, sent)
    email_services.mailbox_poll(mailbox=mailbox)
    rows = list(InboundEmail.objects.filter(mailbox=mailbox).order_by("uid"))
    assert len(rows) == 2

    admin = _client(make_user(organization=organization, role=Role.ADMIN))
    for row, original in zip(rows, sent, strict=True):
        stored = Path(settings.MEDIA_ROOT, row.raw_file).read_bytes()
        assert stored[:2] == b"\x1f\x8b"  # gzip on disk
        assert gzip.decompress(stored) == original
        response = admin.get(f"/api/v1/integrations/inbound-emails/{row.pk}/raw")
        assert response.status_code == 200
        assert response["Content-Type"] == "message/rfc822"
        assert response.content == original
    listed = admin.get("/api/v1/integrations/inbound-emails/", {"mailbox": mailbox.pk}).json()
    assert [item["has_raw"] for item in listed["results"]] == [True, True]

    # Another organization's admin and this organization's operator see nothing.
    outsider = _client(make_user(organization=other_organization, role=Role.ADMIN))
    operator = _client(make_user(organization=organization, role=Role.OPERATOR))
    for client in (outsider, operator):
        assert (
            client.get(f"/api/v1/integrations/inbound-emails/{rows[0].pk}/raw").status_code == 404
        )
        assert client.get("/api/v1/integrations/inbound-emails/").json()["count"] == 0

    # The hourly cleanup drops originals past ZENITH_RAW_MAIL_RETENTION_DAYS, nothing younger.
    settings.ZENITH_RAW_MAIL_RETENTION_DAYS = 30
    old, young = rows
    InboundEmail.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=31))
    report = task_records_cleanup()
    assert report["raw_mail"] == 1
    assert not default_storage.exists(old.raw_file)
    assert default_storage.exists(young.raw_file)
    gone = admin.get(f"/api/v1/integrations/inbound-emails/{old.pk}/raw")
    assert gone.status_code == 404
    assert "no longer kept" in gone.json()["detail"]
    assert admin.get(f"/api/v1/integrations/inbound-emails/{young.pk}/raw").status_code == 200
