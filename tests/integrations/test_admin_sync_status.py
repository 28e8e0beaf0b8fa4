"""Mailbox and Slack workspace admin pages: last sync, messages taken, lag and error."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from taskops.models import TaskRecord, TaskState
from tests.integrations.factories import MailboxFactory, SlackWorkspaceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user(username="root", is_superuser=True, is_staff=True))
    return client


def listing_cells(page: str, field: str) -> list[str]:
    """The text of column `field` in every row of a change list."""
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(rf'<td class="field-{field}[^"]*">(.*?)</td>', page, re.S)
    ]


def detail_value(page: str, field: str) -> str:
    """The text of read-only field `field` on a change page."""
    match = re.search(rf'field-{field}\b.*?<div class="readonly">(.*?)</div>', page, re.S)
    assert match, f"no {field} on the page"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def ledger_row(name: str, *, kwargs: dict, result: dict, finished_ago: timedelta) -> TaskRecord:
    finished = timezone.now() - finished_ago
    return TaskRecord.objects.create(
        task_id=f"t-{TaskRecord.objects.count()}",
        name=name,
        kwargs=kwargs,
        state=TaskState.SUCCESS,
        result=result,
        queued_at=finished,
        updated_at=finished,
        finished_at=finished,
    )


def test_a_mailbox_shows_its_last_run_count_lag_and_error(admin_client):
    mailbox = MailboxFactory(
        last_polled_at=timezone.now() - timedelta(minutes=1),
        last_success_at=timezone.now() - timedelta(minutes=7, seconds=5),
        last_error="IMAP login failed: bad credentials",
    )
    other = MailboxFactory(last_success_at=None)
    name = "integrations.tasks.sync_mailbox_task"
    ledger_row(
        name,
        kwargs={"mailbox_id": mailbox.pk},
        result={"fetched": 4},
        finished_ago=timedelta(hours=2),
    )
    ledger_row(
        name,
        kwargs={"mailbox_id": mailbox.pk},
        result={"fetched": 17},
        finished_ago=timedelta(minutes=8),
    )
    ledger_row(
        name,
        kwargs={"mailbox_id": other.pk},
        result={"fetched": 99},
        finished_ago=timedelta(minutes=1),
    )

    listing = admin_client.get("/admin/integrations/mailbox/").content.decode()
    detail = admin_client.get(f"/admin/integrations/mailbox/{mailbox.pk}/change/").content.decode()
    other_detail = admin_client.get(
        f"/admin/integrations/mailbox/{other.pk}/change/"
    ).content.decode()

    assert "messages taken (last run)" in listing.lower()
    # The newest successful run of each mailbox, never another mailbox's.
    assert sorted(listing_cells(listing, "taken_last_run")) == ["17", "99"]
    assert detail_value(detail, "taken_last_run") == "17"
    assert detail_value(other_detail, "taken_last_run") == "99"
    # Lag: now - last success, 7 minutes and some seconds; never for a mailbox never synced.
    assert re.fullmatch(r"7m \d\ds", detail_value(detail, "lag"))
    assert detail_value(other_detail, "lag") == "never"
    assert sorted(listing_cells(listing, "lag"))[-1] == "never"
    assert "IMAP login failed: bad credentials" in listing_cells(listing, "last_error")
    assert detail_value(detail, "last_error") == "IMAP login failed: bad credentials"
    assert listing_cells(listing, "last_polled_at")[0] not in ("", "-")


def test_a_slack_workspace_shows_its_last_run_count_lag_and_error(admin_client):
    workspace = SlackWorkspaceFactory(
        last_sync_at=timezone.now() - timedelta(hours=3, minutes=2),
        last_error="token_revoked",
    )
    second = SlackWorkspaceFactory()
    name = "integrations.tasks.sync_slack_tickets"
    ledger_row(
        name,
        kwargs={"organization_id": workspace.organization_id},
        result={"seen": 23, "tickets": 5},
        finished_ago=timedelta(hours=3),
    )
    ledger_row(
        name,
        kwargs={"organization_id": second.organization_id},
        result={"seen": 71},
        finished_ago=timedelta(minutes=1),
    )

    detail = admin_client.get(
        f"/admin/integrations/slackworkspace/{workspace.pk}/change/"
    ).content.decode()
    listing = admin_client.get("/admin/integrations/slackworkspace/").content.decode()

    assert "messages taken (last run)" in detail.lower()
    assert detail_value(detail, "taken_last_run") == "23"  # not the other organization's 71
    assert sorted(listing_cells(listing, "taken_last_run")) == ["23", "71"]
    assert detail_value(detail, "lag") == "3h 02m"
    assert sorted(listing_cells(listing, "lag")) == ["3h 02m", "never"]
    assert detail_value(detail, "last_error") == "token_revoked"
