"""The /metrics series the dashboard needs: tickets by source, review share, runtimes, states."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from mlmodels.models import ModelStatus, ModelVersion, Prediction
from taskops.models import TaskRecord, TaskState
from tests.taskops.test_metrics import samples
from tests.tickets.factories import OrganizationFactory, TicketFactory
from tickets.models import Organization, Source, Ticket

TOKEN = "scrape-me-please"

pytestmark = pytest.mark.django_db


@pytest.fixture
def scrape(client: Any, settings: Any) -> Callable[[], dict[tuple[str, tuple], float]]:
    settings.ZENITH_METRICS_TOKEN = TOKEN

    def get() -> dict[tuple[str, tuple], float]:
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        return samples(response.content.decode())

    return get


def ticket(organization: Organization, *, source: str = Source.API, age: timedelta | None = None):
    made = TicketFactory(organization=organization, source=source)
    if age is not None:
        Ticket.objects.filter(pk=made.pk).update(created_at=timezone.now() - age)
    return made


def predict(
    made: Ticket, version: ModelVersion, *, confidence: float, applied: bool = True
) -> Prediction:
    return Prediction.objects.create(
        ticket=made,
        target=version.target,
        model_version=version,
        label="printing",
        confidence=confidence,
        applied=applied,
    )


def test_tickets_are_counted_by_organization_and_source(scrape, organization, other_organization):
    for _ in range(2):
        ticket(organization, source=Source.SLACK)
    ticket(organization, source=Source.EMAIL)
    ticket(organization, source=Source.IMPORT, age=timedelta(hours=3))
    ticket(organization, source=Source.EMAIL, age=timedelta(days=2))
    ticket(other_organization, source=Source.API)

    values = scrape()

    def hour(org: str, source: str) -> float:
        labels = (("organization", org), ("source", source))
        return values[("zenith_tickets_ingested_last_hour", labels)]

    def day(org: str, source: str) -> float:
        labels = (("organization", org), ("source", source))
        return values[("zenith_tickets_ingested_last_day", labels)]

    assert hour("acme", "slack") == 2
    assert hour("acme", "email") == 1
    assert hour("acme", "import") == 0
    assert hour("acme", "api") == 0
    assert day("acme", "import") == 1
    assert day("acme", "email") == 1  # the two-day-old e-mail is out of the window
    assert hour("globex", "api") == 1
    assert hour("globex", "slack") == 0


def test_review_share_counts_model_labels_below_each_organizations_threshold(
    scrape, organization, other_organization
):
    organization.confidence_threshold = 0.6
    organization.save()
    other_organization.confidence_threshold = 0.2
    other_organization.save()
    acme = ModelVersion.objects.create(
        organization=organization, target="category", version=1, status=ModelStatus.ACTIVE
    )
    globex = ModelVersion.objects.create(
        organization=other_organization, target="category", version=1, status=ModelStatus.ACTIVE
    )
    unsure = ticket(organization)
    predict(unsure, acme, confidence=0.4)
    Ticket.objects.filter(pk=unsure.pk).update(needs_review=True)
    predict(ticket(organization), acme, confidence=0.9)
    reviewed = ticket(organization)  # unsure, and a person has since set its label
    predict(reviewed, acme, confidence=0.3)
    predict(ticket(organization), acme, confidence=0.1, applied=False)  # a person's label
    predict(ticket(organization, age=timedelta(days=2)), acme, confidence=0.1)
    predict(ticket(other_organization), globex, confidence=0.4)  # sure enough at 0.2

    values = scrape()

    def series(name: str, org: str) -> float:
        return values[(name, (("organization", org),))]

    assert series("zenith_tickets_classified_last_day", "acme") == 3
    assert series("zenith_tickets_below_threshold_last_day", "acme") == 2
    assert series("zenith_tickets_needing_review_last_day", "acme") == 1
    assert series("zenith_tickets_classified_last_day", "globex") == 1
    assert series("zenith_tickets_below_threshold_last_day", "globex") == 0
    assert series("zenith_tickets_needing_review_last_day", "globex") == 0


def test_runtime_histogram_is_cumulative_per_task_name(scrape, make_record):
    now = timezone.now()
    for runtime in (0.05, 0.3, 4.0, 700.0):
        make_record(state=TaskState.SUCCESS, runtime=runtime, queued_at=now, finished_at=now)
    make_record(state=TaskState.FAILURE, runtime=0.2, queued_at=now, finished_at=now)
    make_record(state=TaskState.SUCCESS, runtime=None, queued_at=now, finished_at=now)
    make_record(name="taskops.tasks.diagnostic_sleep", state=TaskState.SUCCESS, runtime=2.0)

    values = scrape()

    def bucket(le: str, name: str = "taskops.tasks.noop") -> float:
        labels = (("le", le), ("name", name))
        return values[("zenith_task_runtime_last_hour_seconds_bucket", labels)]

    assert bucket("0.1") == 1
    assert bucket("0.5") == 3  # failures count too
    assert bucket("5.0") == 4
    assert bucket("300.0") == 4
    assert bucket("900.0") == 5
    assert bucket("+Inf") == 5  # the run without a runtime is in no bucket
    assert bucket("1.0", "taskops.tasks.diagnostic_sleep") == 0
    assert bucket("2.5", "taskops.tasks.diagnostic_sleep") == 1
    noop = (("name", "taskops.tasks.noop"),)
    assert values[("zenith_task_runtime_last_hour_seconds_gcount", noop)] == 5
    assert values[("zenith_task_runtime_last_hour_seconds_gsum", noop)] == pytest.approx(704.55)


def test_unfinished_tasks_by_name_and_state(scrape, make_record):
    make_record(state=TaskState.PENDING)
    make_record(state=TaskState.PENDING)
    make_record(state=TaskState.STARTED)
    make_record(name="integrations.tasks.sync_slack_tickets", state=TaskState.RETRY)
    make_record(name="integrations.tasks.sync_slack_tickets", state=TaskState.SUCCESS)
    make_record(name="taskops.tasks.cleanup_failed_tasks", state=TaskState.SUCCESS)

    values = scrape()

    def now(name: str, state: str) -> float:
        return values[("zenith_tasks_unfinished", (("name", name), ("state", state)))]

    assert now("taskops.tasks.noop", "PENDING") == 2
    assert now("taskops.tasks.noop", "STARTED") == 1
    assert now("taskops.tasks.noop", "RETRY") == 0
    assert now("integrations.tasks.sync_slack_tickets", "RETRY") == 1
    # A name with nothing unfinished keeps its series, at zero.
    assert now("taskops.tasks.cleanup_failed_tasks", "PENDING") == 0
    finished = ("zenith_tasks_unfinished", (("name", "taskops.tasks.noop"), ("state", "SUCCESS")))
    assert finished not in values
    assert values[("zenith_tasks_active", ())] == 4


def _scrape_queries(client: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    return len(queries.captured_queries)


def test_a_scrape_runs_the_same_queries_whatever_the_rows(client, settings, make_record):
    """Aggregates in the database: more tickets, tasks or organizations add no query."""
    settings.ZENITH_METRICS_TOKEN = TOKEN
    org = OrganizationFactory(slug="small")
    version = ModelVersion.objects.create(
        organization=org, target="category", version=1, status=ModelStatus.ACTIVE
    )
    predict(ticket(org, source=Source.SLACK), version, confidence=0.5)
    make_record(state=TaskState.SUCCESS, runtime=1.0)
    few = _scrape_queries(client)

    for n in range(5):
        other = OrganizationFactory(slug=f"more-{n}")
        for source in Source.values:
            ticket(other, source=source)
        predict(ticket(other), version, confidence=0.9)
        make_record(name=f"taskops.tasks.task_{n}", state=TaskState.FAILURE, runtime=2.0)
        make_record(name=f"taskops.tasks.task_{n}", state=TaskState.PENDING)

    assert _scrape_queries(client) == few
    assert TaskRecord.objects.count() == 11
