"""The model live-accuracy alert: a serving model people keep correcting fires, and recovers.

Reviews are what the review queue leaves behind: an applied prediction of the serving
version, then a person's label on that ticket (the same label: kept; another: corrected).
The evaluation runs as beat runs it, on a worker consuming the real broker.
"""

from __future__ import annotations

from typing import Any

import pytest

from alerts import services as alerts
from alerts.models import AlertDelivery, AlertIncident, AlertRule, AlertRuleKind
from mlmodels.models import ModelStatus, ModelVersion
from tests.alerts.test_alerts import RULES_URL, evaluate_on_worker
from tests.mlmodels.factories import ModelVersionFactory, PredictionFactory
from tickets.models import LabelChange, Organization

OFFLINE = 0.9


def serving_model(organization: Organization, *, status: str = ModelStatus.ACTIVE) -> ModelVersion:
    return ModelVersionFactory(
        organization=organization, version=1, status=status, metrics={"accuracy": OFFLINE}
    )


def review(version: ModelVersion, person: Any, *, kept: int, corrected: int) -> None:
    """People review `kept + corrected` of the version's applied predictions."""
    for n in range(kept + corrected):
        prediction = PredictionFactory(model_version=version, label="hardware", applied=True)
        LabelChange.objects.create(
            ticket=prediction.ticket,
            field=version.target,
            previous_value="hardware",
            new_value="hardware" if n < kept else "network",
            changed_by=person,
        )


def accuracy_rule(organization: Organization, **fields: Any) -> AlertRule:
    return alerts.alert_rule_create(
        organization=organization,
        name="Triage drifting",
        kind=AlertRuleKind.MODEL_ACCURACY,
        email_recipients=[f"ml@{organization.slug}.test"],
        **fields,
    )


def test_only_the_degraded_organizations_model_fires_once_and_recovers(
    inthread_worker, organization, other_organization, make_user, mailoutbox, settings
):
    settings.ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS = 20
    person = make_user(organization=organization)
    ours, theirs = serving_model(organization), serving_model(other_organization)
    rule = accuracy_rule(organization)
    accuracy_rule(other_organization)
    assert rule.threshold == 10
    # Theirs: 25 reviewed, one corrected (96 %, above its offline 90 %): healthy.
    review(theirs, person, kept=24, corrected=1)
    # Ours: 19 reviewed, 4 corrected (79 %, 11 points below): one review short of judging.
    review(ours, person, kept=15, corrected=4)

    evaluate_on_worker()

    assert not AlertIncident.objects.exists()
    assert mailoutbox == []

    # The 20th review: 16 of 20 kept, live 80 %, exactly 10 points below the offline 90 %.
    review(ours, person, kept=1, corrected=0)
    evaluate_on_worker()
    evaluate_on_worker()

    incident = AlertIncident.objects.get()
    assert (incident.organization, incident.state, incident.count) == (organization, "open", 1)
    [model] = incident.details["models"]
    assert (model["target"], model["version"], model["reviewed"], model["changed"]) == (
        "category",
        1,
        20,
        4,
    )
    assert model["drop_points"] == pytest.approx(10.0)
    [fired] = mailoutbox
    assert fired.to == ["ml@acme.test"]
    assert fired.subject == "[Zenith] FIRING: Triage drifting (Acme)"
    assert (
        "category model v1: live accuracy 80.0 % on 20 reviewed predictions (4 corrected), "
        "offline 90.0 %: 10.0 points below" in fired.body
    )

    # People keep the next 20 predictions: 36 of 40, 90 %, back at the offline figure.
    review(ours, person, kept=20, corrected=0)
    evaluate_on_worker()

    incident.refresh_from_db()
    assert (incident.state, incident.resolution) == ("resolved", "recovered")
    assert [mail.subject for mail in mailoutbox] == [
        "[Zenith] FIRING: Triage drifting (Acme)",
        "[Zenith] RECOVERED: Triage drifting (Acme)",
    ]
    assert "now 0 models with a live accuracy 10 points" in mailoutbox[1].body
    assert not AlertIncident.objects.filter(organization=other_organization).exists()
    assert AlertDelivery.objects.count() == 2


def test_a_retired_version_is_not_judged_and_the_threshold_is_the_rules(
    db, organization, make_user, settings
):
    settings.ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS = 5
    person = make_user(organization=organization)
    review(serving_model(organization, status=ModelStatus.RETIRED), person, kept=0, corrected=6)
    serving = ModelVersionFactory(
        organization=organization, version=2, status=ModelStatus.ACTIVE, metrics={"accuracy": 0.9}
    )
    # 8 of 10 kept: 10 points below the offline 90 %.
    review(serving, person, kept=8, corrected=2)
    rule = accuracy_rule(organization, threshold=15)

    assert alerts.alert_rule_evaluate(rule=rule) == "quiet"

    alerts.alert_rule_update(rule=rule, data={"threshold": 10})
    assert alerts.alert_rule_evaluate(rule=rule) == "fired"
    assert [m["version"] for m in AlertIncident.objects.get().details["models"]] == [2]


def test_admins_create_model_accuracy_rules_over_the_api_and_see_them_in_the_admin(
    db, organization, make_user, make_api_client, admin_client, settings
):
    settings.ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS = 1
    api = make_api_client(make_user(organization=organization, role="admin", username="ada"))
    body = {
        "organization": organization.pk,
        "name": "Triage drifting",
        "kind": "model_accuracy",
        "email_recipients": ["ml@acme.test"],
    }

    too_far = api.post(RULES_URL, {**body, "threshold": 101}, format="json")
    created = api.post(RULES_URL, body, format="json")

    assert (too_far.status_code, list(too_far.json())) == (400, ["detail", "threshold"])
    assert created.status_code == 201, created.json()
    assert (created.json()["kind"], created.json()["threshold"]) == ("model_accuracy", 10)
    review(serving_model(organization), make_user(), kept=0, corrected=1)
    alerts.alert_rule_evaluate(rule=AlertRule.objects.get())
    incidents = api.get("/api/v1/alerts/incidents/?state=open").json()["results"]
    assert [i["details"]["models"][0]["live_accuracy"] for i in incidents] == [0.0]
    page = admin_client.get("/admin/alerts/alertrule/?kind__exact=model_accuracy")
    assert page.status_code == 200
    assert "Triage drifting" in page.content.decode()
    assert "Model live accuracy below offline" in page.content.decode()


def test_the_admin_add_form_leaves_the_threshold_to_the_kind_unless_one_is_typed(
    db, admin_client, organization
):
    def add(name: str, kind: str, threshold: str) -> Any:
        return admin_client.post(
            "/admin/alerts/alertrule/add/",
            {
                "organization": organization.pk,
                "name": name,
                "enabled": "on",
                "kind": kind,
                "task_pattern": "integrations.tasks.*" if kind == "task_failures" else "",
                "integration": "any",
                "threshold": threshold,
                "window_minutes": 15,
                "slack_channel": "",
                "email_recipients": '["ops@acme.test"]',
            },
        )

    form = admin_client.get("/admin/alerts/alertrule/add/").content.decode()
    responses = [
        add("Drift", "model_accuracy", ""),
        add("Failures", "task_failures", ""),
        add("Drift, strict", "model_accuracy", "5"),
        add("Drift, nonsense", "model_accuracy", "0"),
    ]

    assert 'name="threshold" value=' not in form
    assert [r.status_code for r in responses] == [302, 302, 302, 200]
    assert "greater than or equal to 1" in responses[3].content.decode()
    thresholds = dict(AlertRule.objects.values_list("name", "threshold"))
    assert thresholds == {"Drift": 10, "Failures": 1, "Drift, strict": 5}
    # Emptying it on an existing rule keeps the rule's value.
    rule = AlertRule.objects.get(name="Drift, strict")
    page = admin_client.get(f"/admin/alerts/alertrule/{rule.pk}/change/").content.decode()
    assert 'name="threshold" value="5"' in page
