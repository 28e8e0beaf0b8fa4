"""The review queue reads the stored margins: order, pages and tenants as a reviewer sees them."""

from __future__ import annotations

import pytest

from tests.tickets.factories import MembershipFactory, TicketFactory
from tickets.models import Role

pytestmark = pytest.mark.django_db


@pytest.fixture
def flagged(organization, other_organization):
    """Four flagged tickets of `organization` (one without a margin), and distractors."""
    by_margin = {
        margin: TicketFactory(organization=organization, needs_review=True, review_margin=margin)
        for margin in (0.3, 0.05, 0.2)
    }
    unmeasured = TicketFactory(organization=organization, needs_review=True, review_margin=None)
    # Reviewed already (no longer flagged), and another organization's flagged ticket.
    TicketFactory(organization=organization, needs_review=False, review_margin=0.01)
    theirs = TicketFactory(organization=other_organization, needs_review=True, review_margin=0.0)
    return by_margin, unmeasured, theirs


def _ids(client, url):
    ids, counts = [], []
    while url:
        body = client.get(url).json()
        ids += [row["id"] for row in body["results"]]
        counts.append(body["count"])
        url = body["next"]
    return ids, counts


def test_most_uncertain_first_across_pages_and_unmeasured_last(api_client, flagged):
    by_margin, unmeasured, _theirs = flagged

    ids, counts = _ids(api_client, "/api/v1/tickets/review/?page_size=2")

    expected = [by_margin[0.05].pk, by_margin[0.2].pk, by_margin[0.3].pk, unmeasured.pk]
    assert ids == expected
    assert counts == [4, 4]


def test_another_organizations_queue_stays_out_of_sight(api_client, other_organization, flagged):
    body = api_client.get(f"/api/v1/tickets/review/?organization={other_organization.pk}").json()

    assert (body["count"], body["results"]) == (0, [])


def test_a_member_of_both_organizations_sees_one_queue_in_margin_order(
    make_api_client, make_user, organization, other_organization, flagged
):
    by_margin, unmeasured, theirs = flagged
    user = make_user(organization=organization, role=Role.VIEWER)
    MembershipFactory(user=user, organization=other_organization, role=Role.VIEWER)

    ids, _counts = _ids(make_api_client(user), "/api/v1/tickets/review/")
    only_theirs, _ = _ids(
        make_api_client(user), f"/api/v1/tickets/review/?organization={other_organization.pk}"
    )

    assert ids == [
        theirs.pk,
        by_margin[0.05].pk,
        by_margin[0.2].pk,
        by_margin[0.3].pk,
        unmeasured.pk,
    ]
    assert only_theirs == [theirs.pk]
