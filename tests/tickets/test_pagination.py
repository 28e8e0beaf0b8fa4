"""Lists count their rows up to a limit and page on past it: what a client sees."""

from __future__ import annotations

import pytest

from tests.tickets.factories import TicketFactory
from tickets.api import CappedCountPaginator

pytestmark = pytest.mark.django_db


@pytest.fixture
def count_limit(monkeypatch):
    """Lower the counting limit so a handful of tickets passes it."""
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 5)
    return 5


def _pages(client, url):
    pages = []
    while url:
        body = client.get(url).json()
        pages.append(body)
        url = body["next"]
    return pages


def test_under_the_limit_the_count_is_exact_and_last_works(api_client, organization):
    TicketFactory.create_batch(7, organization=organization)

    body = api_client.get("/api/v1/tickets/?page_size=3").json()
    last = api_client.get("/api/v1/tickets/?page_size=3&page=last").json()

    assert (body["count"], body["count_exact"]) == (7, True)
    assert [len(body["results"]), len(last["results"]), last["next"]] == [3, 1, None]


def test_past_the_limit_every_ticket_is_reached_once_newest_first(
    api_client, organization, other_organization, count_limit
):
    mine = TicketFactory.create_batch(12, organization=organization)
    TicketFactory.create_batch(4, organization=other_organization)

    pages = _pages(api_client, "/api/v1/tickets/?page_size=4")

    assert [(p["count"], p["count_exact"]) for p in pages] == [(5, False)] * 3
    assert [len(p["results"]) for p in pages] == [4, 4, 4]
    seen = [row["id"] for p in pages for row in p["results"]]
    assert seen == sorted((t.id for t in mine), reverse=True)
    assert pages[0]["previous"] is None
    assert pages[2]["previous"] is not None


def test_past_the_limit_a_page_beyond_the_rows_is_404(api_client, organization, count_limit):
    TicketFactory.create_batch(8, organization=organization)

    beyond = api_client.get("/api/v1/tickets/?page_size=4&page=3")
    last = api_client.get("/api/v1/tickets/?page_size=4&page=last")
    zero = api_client.get("/api/v1/tickets/?page_size=4&page=0")

    assert beyond.status_code == 404
    assert last.status_code == 404
    assert "not counted" in last.json()["detail"]
    assert zero.status_code == 404


def test_a_filtered_list_counts_only_its_matches(api_client, organization, count_limit):
    TicketFactory.create_batch(9, organization=organization, status="closed")
    opened = TicketFactory.create_batch(3, organization=organization, status="open")

    body = api_client.get("/api/v1/tickets/?status=open").json()
    closed = api_client.get("/api/v1/tickets/?status=closed").json()

    assert (body["count"], body["count_exact"]) == (3, True)
    assert [row["id"] for row in body["results"]] == sorted((t.id for t in opened), reverse=True)
    assert (closed["count"], closed["count_exact"], len(closed["results"])) == (5, False, 9)
