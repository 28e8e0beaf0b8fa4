"""A history sync killed mid-pagination (SIGKILL of a real worker) and run again."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from django_celery_results.models import TaskResult

from integrations.models import SlackChannel, SlackMessage
from taskops.services import task_enqueue
from tests.integrations.slack.conftest import CHANNEL_ID, wait_until
from tests.support.slack_server import SlackApiServer
from tickets.models import Ticket

MESSAGES = 1500
PAGE = 50


def _worker_env(slack_api: SlackApiServer) -> dict[str, str]:
    return {"SLACK_API_URL": slack_api.url, "SLACK_HISTORY_PAGE_SIZE": str(PAGE)}


def _enqueue_sync(organization) -> str:
    return task_enqueue(
        name="integrations.tasks.sync_slack_tickets",
        kwargs={"organization_id": organization.pk},
        triggered_by="test",
    )


@pytest.mark.slow
@pytest.mark.faults
def test_sync_killed_mid_pagination_loses_and_duplicates_nothing(
    processes, organization, channel: SlackChannel, slack_api: SlackApiServer
):
    sent = [slack_api.add_message(CHANNEL_ID, f"outage report {i}")["ts"] for i in range(MESSAGES)]
    # Slow the walk down with 429s (Retry-After: 1 s) so the kill lands mid-pass.
    slack_api.rate_limit_every = 4
    slack_api.retry_after = 1
    worker = processes.worker(worker_type="sync", env=_worker_env(slack_api))

    _enqueue_sync(organization)
    wait_until(lambda: Ticket.objects.count() >= 5 * PAGE, timeout=60, what="five pages committed")
    worker.kill()

    channel.refresh_from_db()
    partial = Ticket.objects.count()
    assert channel.sync_cursor, "the killed pass left its cursor"
    assert channel.latest_ts == ""
    assert PAGE * 5 <= partial < MESSAGES
    assert partial % PAGE == 0, "only whole pages are committed"
    slack_api.reset_requests()
    time.sleep(0.2)

    processes.worker(worker_type="sync", env=_worker_env(slack_api))
    task_id = _enqueue_sync(organization)
    wait_until(
        lambda: TaskResult.objects.filter(task_id=task_id, status="SUCCESS").exists(),
        timeout=120,
        what="the second sync to succeed",
    )

    keys = Counter(Ticket.objects.values_list("external_id", flat=True))
    assert keys == Counter({f"T0000001:{CHANNEL_ID}:{ts}": 1 for ts in sent})
    assert SlackMessage.objects.count() == MESSAGES
    history = [r for r in slack_api.requests if r.method == "conversations.history"]
    assert history[0].params.get("cursor"), "the second run resumed at the saved cursor"
    served = sum(1 for r in history if not r.rate_limited)
    assert served == (MESSAGES - partial) // PAGE, "no page was fetched twice"
    channel.refresh_from_db()
    assert channel.sync_cursor == ""
    assert channel.latest_ts == sent[-1]
    assert slack_api.retry_after_violations() == []
