"""The review queue, label hygiene and live accuracy, as people and scrapers see them."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from mlmodels import selectors, services
from tests.mlmodels.conftest import unlabelled_tickets
from tickets.models import LabelChange, LabelSource, Role, Ticket

pytestmark = pytest.mark.django_db

TOKEN = "review-scrape-token"


@pytest.fixture
def queue(organization, import_sample):
    """A trained category model and 12 new tickets it classified, all flagged (threshold 1)."""
    import_sample(organization, n=200)
    services.model_train(organization=organization, target="category")
    organization.confidence_threshold = 1.0
    organization.save()
    tickets = unlabelled_tickets(organization, 12, seed=3)
    services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in tickets])
    return tickets


def _known(organization):
    return sorted(
        set(Ticket.objects.filter(organization=organization).values_list("category", flat=True))
        - {""}
    )


def test_queue_lists_flagged_tickets_most_uncertain_first_with_top_terms(
    api_client, organization, queue
):
    response = api_client.get(f"/api/v1/tickets/review/?organization={organization.pk}")

    assert response.status_code == 200
    results = response.data["results"]
    assert {row["id"] for row in results} == {t.pk for t in queue}
    margins = [row["review_margin"] for row in results]
    assert margins == sorted(margins)
    for row in results:
        prediction = row["predictions"]["category"]
        assert row["needs_review"] is True
        assert prediction["margin"] == pytest.approx(row["review_margin"], abs=1e-4)
        assert prediction["top_terms"]
    assert api_client.get("/api/v1/tickets/review").status_code == 200


def test_accept_keeps_the_label_as_a_persons_and_counts_as_kept(api_client, user, queue):
    ticket = queue[0]
    predicted = ticket.predictions.get().label

    response = api_client.post(
        f"/api/v1/tickets/review/{ticket.pk}/accept", {"target": "category"}, format="json"
    )

    assert response.status_code == 200
    assert response.data["needs_review"] is False
    ticket.refresh_from_db()
    assert (ticket.category, ticket.category_source) == (predicted, LabelSource.PERSON)
    change = LabelChange.objects.get(ticket=ticket)
    assert (change.new_value, change.changed_by) == (predicted, user)
    listed = api_client.get("/api/v1/tickets/review/").data["results"]
    assert ticket.pk not in {row["id"] for row in listed}
    version = ticket.predictions.get().model_version
    live = selectors.model_version_live_accuracy(versions=[version])[version.pk]
    assert (live["reviewed"], live["changed"], live["live_accuracy"]) == (1, 0, 1.0)


def test_correct_to_a_known_label_counts_as_changed(api_client, organization, queue):
    ticket = queue[1]
    predicted = ticket.predictions.get().label
    other = next(label for label in _known(organization) if label != predicted)

    response = api_client.post(
        f"/api/v1/tickets/review/{ticket.pk}/correct/",
        {"target": "category", "label": other},
        format="json",
    )

    assert response.status_code == 200
    assert response.data["category"] == other
    version = ticket.predictions.get().model_version
    live = selectors.model_version_live_accuracy(versions=[version])[version.pk]
    assert (live["reviewed"], live["changed"], live["live_accuracy"]) == (1, 1, 0.0)


def test_a_never_used_label_is_refused_unless_allowed(api_client, organization, queue):
    ticket = queue[2]
    url = f"/api/v1/tickets/review/{ticket.pk}/correct"

    refused = api_client.post(url, {"target": "category", "label": "Netwrok"}, format="json")
    patched = api_client.patch(
        f"/api/v1/tickets/{ticket.pk}", {"category": "Netwrok"}, format="json"
    )

    for response in (refused, patched):
        assert response.status_code == 400
        field = "label" if response is refused else "category"
        assert "'Netwrok' is not a category this organization uses" in response.data[field][0]
        assert response.data["known_labels"] == _known(organization)
    ticket.refresh_from_db()
    assert ticket.category != "Netwrok"
    assert not LabelChange.objects.filter(ticket=ticket).exists()

    allowed = api_client.patch(
        f"/api/v1/tickets/{ticket.pk}",
        {"category": "Netwrok", "allow_new_label": True},
        format="json",
    )
    assert allowed.status_code == 200
    assert allowed.data["category"] == "Netwrok"


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("accept", {}, "target"),
        ("accept", {"target": "colour"}, "target"),
        ("accept", {"target": "category", "label": "x"}, "label"),
        ("correct", {"target": "category"}, "label"),
        ("correct", {"target": "category", "label": ""}, "label"),
        ("correct", {"target": "category", "label": "x" * 101}, "label"),
    ],
)
def test_bad_review_input_names_the_field(api_client, queue, action, body, field):
    response = api_client.post(
        f"/api/v1/tickets/review/{queue[0].pk}/{action}", body, format="json"
    )

    assert response.status_code == 400
    assert field in response.data
    assert Ticket.objects.get(pk=queue[0].pk).needs_review is True


def test_another_organization_sees_nothing_and_gets_404(
    other_organization, organization, make_user, make_api_client, queue
):
    outsider = make_api_client(make_user(organization=other_organization, role=Role.ADMIN))
    viewer = make_api_client(make_user(organization=organization, role=Role.VIEWER))
    ticket = queue[0]

    assert outsider.get("/api/v1/tickets/review/").data["results"] == []
    assert (
        outsider.get(f"/api/v1/tickets/review/?organization={organization.pk}").data["results"]
        == []
    )
    for action in ("accept", "correct"):
        response = outsider.post(
            f"/api/v1/tickets/review/{ticket.pk}/{action}",
            {"target": "category", "label": "4"} if action == "correct" else {"target": "category"},
            format="json",
        )
        assert response.status_code == 404
    assert viewer.get("/api/v1/tickets/review/").status_code == 200
    assert (
        viewer.post(
            f"/api/v1/tickets/review/{ticket.pk}/accept", {"target": "category"}, format="json"
        ).status_code
        == 403
    )
    assert Ticket.objects.get(pk=ticket.pk).needs_review is True
    assert outsider.get("/api/v1/tickets/review/?organization=abc").status_code == 400


def test_live_accuracy_is_on_metrics_beside_the_offline_one(
    client, settings, api_client, organization, queue
):
    settings.ZENITH_METRICS_TOKEN = TOKEN
    api_client.post(
        f"/api/v1/tickets/review/{queue[0].pk}/accept", {"target": "category"}, format="json"
    )
    version = queue[0].predictions.get().model_version

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    samples = {
        (sample.name, sample.labels.get("organization"), sample.labels.get("version")): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    key = (organization.slug, str(version.version))
    assert samples[("zenith_model_live_accuracy", *key)] == 1.0
    assert samples[("zenith_model_reviewed_predictions", *key)] == 1.0
    assert samples[("zenith_model_offline_accuracy", *key)] == pytest.approx(version.accuracy)


def test_admin_review_queue_accepts_and_chooses_labels(make_user, organization, queue):
    root = Client()
    root.force_login(make_user(username="root", is_staff=True, is_superuser=True))
    url = reverse("admin:mlmodels_prediction_review")

    page = root.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Review queue" in html
    assert f"#{queue[0].pk}" in html
    assert "Accept" in html

    root.post(url, {"ticket": queue[0].pk, "target": "category"}, follow=True)
    predicted = queue[1].predictions.get().label
    other = next(label for label in _known(organization) if label != predicted)
    done = root.post(
        url, {"ticket": queue[1].pk, "target": "category", "label": other}, follow=True
    )

    first, second = Ticket.objects.get(pk=queue[0].pk), Ticket.objects.get(pk=queue[1].pk)
    assert (first.needs_review, first.category_source) == (False, LabelSource.PERSON)
    assert (second.needs_review, second.category) == (False, other)
    assert f"Ticket #{second.pk}: category is {other} (reviewed)" in done.content.decode()
    version = first.predictions.get().model_version
    change_page = root.get(reverse("admin:mlmodels_modelversion_change", args=[version.pk]))
    assert "of 2 reviewed predictions kept (1 changed)" in change_page.content.decode()
    assert "Model selection (CV on the training split)" in change_page.content.decode()
    assert "class-weight power" in change_page.content.decode()


def test_admin_review_queue_of_another_organizations_admin(
    make_user, other_organization, organization, queue
):
    staff = Client()
    staff.force_login(
        make_user(organization=other_organization, role=Role.ADMIN, username="g", is_staff=True)
    )
    url = reverse("admin:mlmodels_prediction_review")

    page = staff.get(url)
    response = staff.post(url, {"ticket": queue[0].pk, "target": "category"})

    assert page.status_code == 200
    assert f"#{queue[0].pk}" not in page.content.decode()
    assert response.status_code == 404
    assert Ticket.objects.get(pk=queue[0].pk).needs_review is True


def _labels(*args: str) -> str:
    out = io.StringIO()
    call_command("labels", *args, stdout=out)
    return out.getvalue()


def test_labels_rename_and_merge_rewrite_tickets_and_ask_for_training(organization, import_sample):
    import_sample(organization, n=200)
    services.model_train(organization=organization, target="category")
    assert selectors.targets_with_new_labels(organization=organization) == ["priority"]
    counts = {
        label: Ticket.objects.filter(organization=organization, category=label).count()
        for label in _known(organization)
    }
    old, into = sorted(counts, key=counts.get)[:2]

    renamed = _labels("--org", "acme", "rename", old, "Hardware")
    merged = _labels("--org", "acme", "merge", "Hardware", into)

    assert f"'{old}' renamed to 'Hardware' on {counts[old]} tickets" in renamed
    assert f"'Hardware' merged into '{into}' on {counts[old]} tickets" in merged
    assert Ticket.objects.filter(organization=organization, category=into).count() == (
        counts[old] + counts[into]
    )
    assert "category" in selectors.targets_with_new_labels(organization=organization)
    with pytest.raises(CommandError, match="already a category of acme: use merge"):
        _labels("--org", "acme", "rename", into, sorted(counts, key=counts.get)[-1])
    with pytest.raises(CommandError, match="'Nope' is not a category of acme"):
        _labels("--org", "acme", "merge", "Nope", into)
    with pytest.raises(CommandError, match="no organization with slug 'globex'"):
        _labels("--org", "globex", "rename", into, "x")


def test_evaluate_model_repeats_reports_mean_and_spread(organization, import_sample):
    import_sample(organization, n=200)
    out = io.StringIO()

    call_command(
        "evaluate_model", "--org", "acme", "--target", "category", "--repeats", "2", stdout=out
    )

    text = out.getvalue()
    assert "acme category: 2 stratified splits (seeds 0-1)" in text
    assert "accuracy         mean" in text
    assert "seed 1: accuracy" in text
    assert "chose class-weight power" in text
