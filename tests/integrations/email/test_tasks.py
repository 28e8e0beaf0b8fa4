"""E-mail tasks, the sync registry, `manage.py sync_email` and real worker processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django_celery_results.models import TaskResult

from integrations import sync
from integrations.models import InboundEmail
from taskops.services import task_enqueue
from tests.integrations.email.conftest import MakeMailbox, append_all, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import DovecotServer, ImapAccount
from tests.support.workers import ProcessManager
from tickets.models import Organization, Role, Ticket
from zenith.celery import app

EMAIL_TASKS = [
    "integrations.tasks.process_email_tickets",
    "integrations.tasks.sync_mailbox_task",
    "integrations.tasks.sync_organization_data",
    "integrations.tasks.manual_sync_trigger",
]


def account(server: DovecotServer, name: str, count: int) -> ImapAccount:
    username, password = server.add_user(name)
    imap = ImapAccount(server, username, password)
    append_all(imap, [samples.plain(f"{name} {i}", f"Body {i}\n") for i in range(count)])
    return imap


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def result_of(task_id: str, timeout: float = 60.0) -> Any:
    row = wait_for(
        lambda: TaskResult.objects.filter(
            task_id=task_id, status__in=["SUCCESS", "FAILURE"]
        ).first(),
        timeout,
        f"task {task_id}",
    )
    assert row.status == "SUCCESS", row.traceback
    return json.loads(row.result)


def test_task_names_are_registered_and_routed_to_the_sync_queue() -> None:
    import integrations.tasks  # noqa: F401 - registers the tasks

    for name in EMAIL_TASKS:
        assert name in app.tasks
        assert app.amqp.router.route({}, name)["queue"].name == "sync_tasks"
    assert "email" in sync.SYNC_SOURCES
    assert callable(sync.sync_source_service("email"))


@pytest.mark.dovecot
@pytest.mark.django_db
def test_sync_email_command_in_the_foreground(
    make_mailbox: MakeMailbox, dovecot_server: DovecotServer, organization: Organization
) -> None:
    make_mailbox(account(dovecot_server, "cmd", 3))
    broken = make_mailbox(account(dovecot_server, "cmd-broken", 1), password="wrong")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="1 mailbox"):
        call_command("sync_email", "--org", "acme", stdout=out, stderr=err)

    assert Ticket.objects.filter(organization=organization).count() == 3
    # Plain progress lines (stdout is not a terminal): the last report is always printed.
    assert "email acme: 3/3 Support 1: 3/3" in out.getvalue()
    assert "3 new ticket(s)" in out.getvalue()
    assert f"{broken.name}: auth error" in err.getvalue()
    with pytest.raises(CommandError, match="no organization"):
        call_command("sync_email", "--org", "nope", stdout=StringIO())


@pytest.mark.dovecot
@pytest.mark.slow
def test_periodic_and_manual_email_syncs_run_on_a_real_worker(
    processes: ProcessManager,
    make_mailbox: MakeMailbox,
    dovecot_server: DovecotServer,
    organization: Organization,
    other_organization: Organization,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], Any],
    tmp_path: Path,
) -> None:
    acme = make_mailbox(account(dovecot_server, "w-acme", 2))
    globex_account = account(dovecot_server, "w-globex", 1)
    make_mailbox(globex_account, organization=other_organization)
    disabled_account = account(dovecot_server, "w-disabled", 1)
    make_mailbox(disabled_account, enabled=False)
    processes.worker(
        worker_type="sync", concurrency=2, env={"DJANGO_MEDIA_ROOT": str(tmp_path / "media")}
    )

    # What beat runs every 10 minutes: one poll task per enabled mailbox.
    fanned_out = result_of(task_enqueue(name="integrations.tasks.process_email_tickets", kwargs={}))
    assert len(fanned_out["enqueued"]) == 2
    for task_id in fanned_out["enqueued"].values():
        assert result_of(task_id)["error"] == ""
    assert Ticket.objects.filter(organization=organization).count() == 2
    assert Ticket.objects.filter(organization=other_organization).count() == 1
    assert seen_uids(disabled_account) == set()
    assert not InboundEmail.objects.filter(mailbox__enabled=False).exists()

    # An operator's "sync now" for one organization, through the API.
    append_all(ImapAccount(dovecot_server, acme.username, acme.password), [samples.plain("Third")])
    operator = make_api_client(make_user(organization=organization, role=Role.OPERATOR))
    response = operator.post("/api/v1/tasks/sync/email", {"organization_id": organization.pk})
    assert response.status_code == 202
    summary = result_of(response.json()["task_id"])
    assert summary["email"]["ticket"] == 1
    assert Ticket.objects.filter(organization=organization).count() == 3

    # The command's --async mode enqueues the same task and prints its id.
    out = StringIO()
    call_command("sync_email", "--org", "globex", "--async", stdout=out)
    assert result_of(out.getvalue().strip())["email"]["ticket"] == 0
