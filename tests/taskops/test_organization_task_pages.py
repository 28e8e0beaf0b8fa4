"""An organization's task list past the counting limit: every task once, newest first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from taskops.models import TaskState
from tickets.api import CappedCountPaginator

pytestmark = pytest.mark.django_db


def test_pages_past_the_count_limit_reach_every_task_of_the_organization_only(
    api_client, make_record, organization, other_organization, monkeypatch
):
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 4)
    now = timezone.now()
    mine = [
        make_record(
            organization=organization,
            state=TaskState.FAILURE if minutes % 2 else TaskState.SUCCESS,
            queued_at=now - timedelta(minutes=minutes),
        )
        for minutes in range(9)
    ]
    for minutes in range(5):
        make_record(organization=other_organization, queued_at=now - timedelta(seconds=minutes))

    url = f"/api/v1/tasks/organization/{organization.pk}/?page_size=4"
    seen, shapes = [], []
    while url:
        body = api_client.get(url).json()
        seen += [row["task_id"] for row in body["results"]]
        shapes.append((body["count"], body["count_exact"], len(body["results"])))
        url = body["next"]
    failures = api_client.get(
        f"/api/v1/tasks/organization/{organization.pk}/", {"state": "FAILURE"}
    ).json()

    assert seen == [record.task_id for record in mine]
    assert shapes == [(4, False, 4), (4, False, 4), (4, False, 1)]
    assert (failures["count"], failures["count_exact"]) == (4, True)
    assert {row["state"] for row in failures["results"]} == {"FAILURE"}
