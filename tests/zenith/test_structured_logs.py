"""Structured logs: one ticket followed by its ticket_id from mailbox or API to its prediction.

Real processes log here: a sync worker and an ML worker started with ZENITH_LOG_FORMAT=json,
their output captured to files and parsed line by line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from integrations.email import services as email_services
from mlmodels import services as ml_services
from mlmodels.models import ModelVersion, Prediction
from taskops.models import TaskRecord
from tests.mlmodels.conftest import sample_rows, write_csv
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tests.support.workers import ManagedProcess, ProcessManager
from tickets import services as ticket_services
from tickets.models import Organization, Source, Ticket
from zenith.logs import formatter_config

ROOT = Path(__file__).resolve().parents[2]
JSON_LOGS = {"ZENITH_LOG_FORMAT": "json"}
CLASSIFY_TASK = "mlmodels.tasks.classify_ticket_task"
SYNC_MAILBOX_TASK = "integrations.tasks.sync_mailbox_task"


def wait_for(predicate: Callable[[], Any], timeout: float = 90.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def json_lines(text: str, source: str) -> list[dict[str, Any]]:
    """Every line of a log as a JSON object; any other line fails the test."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{source} line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), f"{source} line {number}: {line!r}"
        assert {"event", "level", "timestamp"} <= entry.keys(), line
        entries.append(entry)
    return entries


def process_lines(process: ManagedProcess) -> list[dict[str, Any]]:
    return json_lines(process.log(), process.name)


def wait_for_task_end(process: ManagedProcess, task_id: str) -> None:
    """Until the worker logged the task's last line (django-structlog's task_succeeded)."""
    wait_for(
        lambda: any(
            '"task_succeeded"' in line and task_id in line for line in process.log().splitlines()
        ),
        what=f"task_succeeded of {task_id} in {process.name}",
    )


def events(entries: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        entry
        for entry in entries
        if entry["event"] == event and all(entry.get(k) == v for k, v in fields.items())
    ]


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """Model artifacts in the test's own folder, shared with the worker processes."""
    root = tmp_path / "media"
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def trained(organization: Organization, media: Path, tmp_path: Path) -> Organization:
    """`organization` with active category and priority models, trained on a small sample."""
    ticket_services.tickets_import_csv(
        organization=organization,
        path=write_csv(tmp_path / "sample.csv", sample_rows(200)),
        text_columns=["title", "body"],
        label_columns={"category": "category", "priority": "urgency"},
    )
    ml_services.organization_models_train(organization=organization)
    assert ModelVersion.objects.filter(organization=organization, status="active").count() == 2
    return organization


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """This process's log lines rendered by the project's JSON formatter."""
    config = formatter_config("json")
    factory = config.pop("()")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(factory(**config))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler.stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.dovecot
@pytest.mark.slow
def test_an_email_is_followed_by_its_ticket_id_from_fetch_to_classification(
    processes: ProcessManager, trained: Organization, imap_account: ImapAccount, media: Path
) -> None:
    organization = trained
    mailbox = email_services.mailbox_create(
        organization=organization,
        name="Support",
        host=imap_account.host,
        port=imap_account.port,
        security="none",
        username=imap_account.username,
        password=imap_account.password,
    )
    imap_account.append(
        "INBOX",
        samples.plain("VPN down since this morning", "I cannot connect to the VPN from home.\n"),
    )
    env = {**JSON_LOGS, "DJANGO_MEDIA_ROOT": str(media)}
    sync_worker = processes.worker(worker_type="sync", env=env)
    ml_worker = processes.worker(worker_type="ml", env=env)

    poll_task_id = email_services.mailbox_poll_enqueue(mailbox=mailbox)
    ticket = wait_for(
        lambda: Ticket.objects.filter(organization=organization, source=Source.EMAIL).first(),
        what="the e-mail's ticket",
    )
    wait_for(lambda: Prediction.objects.filter(ticket=ticket).count() == 2, what="the predictions")
    classify_task = TaskRecord.objects.get(name=CLASSIFY_TASK, kwargs__ticket_id=ticket.pk)
    wait_for_task_end(sync_worker, poll_task_id)
    wait_for_task_end(ml_worker, classify_task.task_id)

    sync_lines, ml_lines = process_lines(sync_worker), process_lines(ml_worker)
    sync_ticket = [e for e in sync_lines if e.get("ticket_id") == ticket.pk]
    ml_ticket = [e for e in ml_lines if e.get("ticket_id") == ticket.pk]
    # One filter on ticket_id finds the fetch, the ticket and the classification, in two processes.
    assert {"email_ingested", "ticket_created", "classification_enqueued"} <= {
        e["event"] for e in sync_ticket
    }
    assert "ticket_classified" in {e["event"] for e in ml_ticket}

    (ingested,) = events(sync_lines, "email_ingested", ticket_id=ticket.pk)
    assert ingested["state"] == "ticket"
    assert ingested["mailbox_id"] == mailbox.pk
    for entry in (ingested, *events(sync_lines, "ticket_created", ticket_id=ticket.pk)):
        assert entry["task_id"] == poll_task_id
        assert entry["task_name"] == SYNC_MAILBOX_TASK
        assert entry["organization"] == organization.pk
    (enqueued,) = events(sync_lines, "classification_enqueued", ticket_id=ticket.pk)
    assert enqueued["classify_task_id"] == classify_task.task_id
    (published,) = events(sync_lines, "task_enqueued", child_task_id=classify_task.task_id)
    assert published["task_id"] == poll_task_id

    (classified,) = events(ml_lines, "ticket_classified", ticket_id=ticket.pk)
    assert classified["task_id"] == classify_task.task_id
    assert classified["task_name"] == CLASSIFY_TASK
    assert classified["organization"] == organization.pk
    # The task that enqueued it is named, so the chain can be walked back.
    assert classified["parent_task_id"] == poll_task_id
    predictions = {p.target: p for p in Prediction.objects.filter(ticket=ticket)}
    for target, prediction in predictions.items():
        assert classified[target] == prediction.label
        assert classified[f"{target}_confidence"] == pytest.approx(prediction.confidence, abs=1e-3)
        assert classified[f"{target}_model_version"] == prediction.model_version.version


@pytest.mark.slow
def test_an_api_request_id_reaches_the_classification_task(
    processes: ProcessManager,
    trained: Organization,
    api_client: Any,
    media: Path,
    json_log: io.StringIO,
) -> None:
    # A solo pool runs the tasks in the worker's main process, between the lines it logs
    # for itself: those must not carry the previous task's fields.
    worker = processes.worker(
        worker_type="ml", pool="solo", env={**JSON_LOGS, "DJANGO_MEDIA_ROOT": str(media)}
    )
    tickets = []
    for subject in ("Printer on floor 3 jams", "Cannot log in to the HR portal"):
        response = api_client.post(
            "/api/v1/tickets/",
            {"organization": trained.pk, "subject": subject, "body": subject},
            format="json",
        )
        assert response.status_code == 201
        ticket_id = response.json()["id"]
        tickets.append(ticket_id)
        # One after the other: the second task arrives after the first one's lines.
        task = wait_for(
            lambda ticket_id=ticket_id: TaskRecord.objects.filter(
                name=CLASSIFY_TASK, kwargs__ticket_id=ticket_id
            ).first(),
            what=f"the classification task of ticket {ticket_id}",
        )
        wait_for_task_end(worker, task.task_id)

    web_lines = json_lines(json_log.getvalue(), "test process")
    worker_lines = process_lines(worker)
    request_ids = []
    for ticket_id in tickets:
        (created,) = events(web_lines, "ticket_created", ticket_id=ticket_id)
        request_id = created["request_id"]
        assert request_id
        assert created["organization"] == trained.pk
        (finished,) = events(web_lines, "request_finished", request_id=request_id)
        assert finished["code"] == 201
        assert finished["request"] == "POST /api/v1/tickets/"
        (enqueued,) = events(web_lines, "classification_enqueued", ticket_id=ticket_id)
        assert enqueued["request_id"] == request_id

        (classified,) = events(worker_lines, "ticket_classified", ticket_id=ticket_id)
        assert classified["request_id"] == request_id
        assert classified["task_id"] == enqueued["classify_task_id"]
        assert classified["task_name"] == CLASSIFY_TASK
        request_ids.append(request_id)
    assert len(set(request_ids)) == 2

    task_ids = {e["task_id"] for e in events(worker_lines, "ticket_classified")}
    own_lines = [e for e in worker_lines if "task_id" not in e]
    # Celery's "Task ...[id] received" is logged by the worker itself, before the task runs.
    received = [e for e in worker_lines if e["event"].endswith("received")]
    assert len(received) == 2
    assert all("task_id" not in e and "ticket_id" not in e for e in received), received
    assert own_lines
    assert all(e.get("ticket_id") is None for e in own_lines)
    assert len(task_ids) == 2


def run_logging_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A process that loads the settings and logs one structlog and one stdlib line."""
    code = (
        "import django, logging, structlog; django.setup(); "
        "structlog.get_logger('zenith.test').info('ticket_created', ticket_id=7, organization=3); "
        "logging.getLogger('some.library').warning('disk %s is full', '/var')"
    )
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ZENITH_LOG_FORMAT"))
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "zenith.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "x" * 50,
    "DJANGO_ALLOWED_HOSTS": "zenith.example.com",
    "ZENITH_FIELD_KEYS": "FEFBsUTHbMNthMXUMuBqd2-iCF3LXnz75CXgW5XDQR0=",
}


def test_debug_logs_plain_readable_lines_by_default() -> None:
    result = run_logging_process({"DJANGO_DEBUG": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "ticket_created" in lines[0]
    assert "ticket_id=7" in lines[0]
    assert "organization=3" in lines[0]
    assert "disk /var is full" in lines[1]
    assert "warning" in lines[1]


def test_production_logs_json_by_default_and_plain_on_request() -> None:
    result = run_logging_process(PRODUCTION)
    assert result.returncode == 0, result.stderr
    ours, library = json_lines(result.stderr, "production process")
    assert ours["event"] == "ticket_created"
    assert (ours["ticket_id"], ours["organization"]) == (7, 3)
    assert (library["event"], library["level"]) == ("disk /var is full", "warning")
    assert library["logger"] == "some.library"

    plain = run_logging_process({**PRODUCTION, "ZENITH_LOG_FORMAT": "plain"})
    assert plain.returncode == 0, plain.stderr
    assert "ticket_id=7" in plain.stderr
    assert not plain.stderr.lstrip().startswith("{")


def test_an_unknown_log_format_stops_start_up() -> None:
    result = run_logging_process({"ZENITH_LOG_FORMAT": "xml"})
    assert result.returncode != 0
    assert "ZENITH_LOG_FORMAT must be one of json, plain" in result.stderr
