"""The admin by tenant, through Django's test client: every Zenith admin page and action.

A staff member who is not a superuser, holds every model permission and administers
organization A must see, open, change and act on A's rows only; B's rows answer 404 and
B's ids in an action are dropped. Global tables are superuser-only.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from alerts.models import AlertRule
from integrations.models import SlackChannel
from mlmodels.models import ModelStatus, ModelVersion
from taskops.models import TaskRecord
from tickets.models import Membership, Organization, Role, Ticket

pytestmark = pytest.mark.django_db

# Every Zenith model with an admin page, by the key of its row in tests/security/conftest.py.
SCOPED_MODELS = [
    "organization",
    "ticket",
    "labelchange",
    "taskrecord",
    "modelversion",
    "prediction",
    "alertrule",
    "alertincident",
    "alertdelivery",
    "slackworkspace",
    "slackchannel",
    "slackmessage",
    "slackevent",
    "mailbox",
    "inboundemail",
]


def admin_url(obj: Any, view: str = "changelist", *args: Any) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.fixture
def staff_client(client: Any, scoped_staff: Any) -> Any:
    client.force_login(scoped_staff)
    return client


def test_every_zenith_admin_is_scoped():
    """No Zenith model admin is left out (a new one must opt in, or be superuser-only)."""
    from tickets.admin_scoping import OrganizationScopedAdmin, SuperuserOnlyAdmin

    zenith_apps = {"tickets", "taskops", "mlmodels", "integrations", "alerts"}
    unscoped = [
        f"{model._meta.app_label}.{model.__name__}"
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in zenith_apps
        and not isinstance(model_admin, OrganizationScopedAdmin | SuperuserOnlyAdmin)
    ]
    assert unscoped == []


@pytest.mark.parametrize("key", SCOPED_MODELS)
def test_changelist_shows_only_the_administered_organization(staff_client, tenants, key):
    alpha, bravo = tenants
    response = staff_client.get(admin_url(alpha.rows[key]))
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert alpha.rows[key].pk in shown
    assert bravo.rows[key].pk not in shown
    # Nor B's name anywhere on the page (filters list related rows by name).
    assert "bravo" not in response.content.decode().lower()


@pytest.mark.parametrize("key", SCOPED_MODELS)
def test_the_other_organizations_pages_answer_404(staff_client, tenants, key):
    alpha, bravo = tenants
    own = staff_client.get(admin_url(alpha.rows[key], "change", alpha.rows[key].pk))
    assert own.status_code == 200
    for view in ("change", "history", "delete"):
        response = staff_client.get(admin_url(bravo.rows[key], view, bravo.rows[key].pk))
        assert response.status_code in (403, 404), (view, response.status_code)
    # A POST to B's change page changes nothing either.
    before = type(bravo.rows[key]).objects.filter(pk=bravo.rows[key].pk).values().get()
    staff_client.post(admin_url(bravo.rows[key], "change", bravo.rows[key].pk), {"name": "x"})
    after = type(bravo.rows[key]).objects.filter(pk=bravo.rows[key].pk).values().get()
    assert before == after


def run_action(client: Any, obj: Any, action: str, ids: list[int]) -> Any:
    return client.post(
        admin_url(obj), {"action": action, "_selected_action": [str(pk) for pk in ids]}, follow=True
    )


def test_actions_on_the_other_organizations_rows_are_refused(
    staff_client, tenants, django_capture_on_commit_callbacks
):
    alpha, bravo = tenants
    records_before = TaskRecord.objects.count()

    # Retry B's failed task: the id is dropped before the action runs; no new task.
    response = run_action(
        staff_client, bravo.rows["taskrecord"], "retry_tasks", [bravo.rows["taskrecord"].pk]
    )
    assert response.status_code == 200
    assert not any("retried" in m for m in messages_of(response))
    # Promote B's model version: it stays as it was.
    run_action(
        staff_client,
        bravo.rows["modelversion"],
        "activate_versions",
        [bravo.rows["modelversion"].pk],
    )
    assert ModelVersion.objects.get(pk=bravo.rows["modelversion"].pk).status == ModelStatus.READY
    # Disable B's alert rule: still enabled.
    run_action(staff_client, bravo.rows["alertrule"], "disable_rules", [bravo.rows["alertrule"].pk])
    assert AlertRule.objects.get(pk=bravo.rows["alertrule"].pk).enabled
    # Reset B's Slack channel history: untouched.
    run_action(
        staff_client, bravo.rows["slackchannel"], "resync_history", [bravo.rows["slackchannel"].pk]
    )
    assert SlackChannel.objects.get(pk=bravo.rows["slackchannel"].pk).latest_ts == "1700000000.1"
    # Sync B's mailbox and workspace: nothing enqueued.
    with django_capture_on_commit_callbacks(execute=False):
        run_action(staff_client, bravo.rows["mailbox"], "sync_now", [bravo.rows["mailbox"].pk])
        run_action(
            staff_client,
            bravo.rows["slackworkspace"],
            "sync_now",
            [bravo.rows["slackworkspace"].pk],
        )
    assert TaskRecord.objects.count() == records_before

    # Mixed selection: only A's row is acted on.
    response = run_action(
        staff_client,
        alpha.rows["alertrule"],
        "disable_rules",
        [alpha.rows["alertrule"].pk, bravo.rows["alertrule"].pk],
    )
    assert "1 rule(s) disabled." in messages_of(response)
    assert not AlertRule.objects.get(pk=alpha.rows["alertrule"].pk).enabled
    assert AlertRule.objects.get(pk=bravo.rows["alertrule"].pk).enabled


def test_choices_offer_only_the_administered_organization(staff_client, tenants):
    alpha, bravo = tenants
    form = staff_client.get(reverse("admin:tickets_ticket_add")).context["adminform"].form
    assert list(form.fields["organization"].queryset) == [alpha.organization]
    # A forged POST naming B is a form error; no ticket lands in B.
    response = staff_client.post(
        reverse("admin:tickets_ticket_add"),
        {
            "organization": bravo.organization.pk,
            "subject": "planted",
            "status": "new",
            "messages-TOTAL_FORMS": 0,
            "messages-INITIAL_FORMS": 0,
            "label_changes-TOTAL_FORMS": 0,
            "label_changes-INITIAL_FORMS": 0,
            "predictions-TOTAL_FORMS": 0,
            "predictions-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "organization" in response.context["adminform"].form.errors
    assert not Ticket.objects.filter(subject="planted").exists()
    # A Slack channel cannot be attached to B's workspace.
    form = (
        staff_client.get(reverse("admin:integrations_slackchannel_add")).context["adminform"].form
    )
    assert list(form.fields["workspace"].queryset) == [alpha.rows["slackworkspace"]]


def test_a_membership_cannot_be_moved_to_or_created_in_another_organization(
    staff_client, tenants, scoped_staff
):
    _alpha, bravo = tenants
    membership = Membership.objects.get(user=scoped_staff)
    response = staff_client.post(
        admin_url(membership, "change", membership.pk),
        {"user": scoped_staff.pk, "organization": bravo.organization.pk, "role": "admin"},
    )
    assert response.status_code == 200  # the form again, with its error
    assert "organization" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(user=scoped_staff, organization=bravo.organization)
    # And a new organization is a superuser's decision.
    assert staff_client.get(reverse("admin:tickets_organization_add")).status_code == 403


@pytest.mark.parametrize(
    "model",
    [
        PeriodicTask,
        IntervalSchedule,
        TaskResult,
        "auth.user",
        "auth.group",
        "authtoken.tokenproxy",
        "axes.accessattempt",
        "taskops.heartbeat",
        "taskops.schedulerlease",
        "django_celery_beat.crontabschedule",
        "django_celery_results.groupresult",
    ],
)
def test_global_tables_are_superuser_only(staff_client, client, make_user, model):
    label = model if isinstance(model, str) else f"{model._meta.app_label}.{model._meta.model_name}"
    url = reverse(f"admin:{label.replace('.', '_')}_changelist")
    assert staff_client.get(url).status_code == 403
    root = make_user(username="root", is_staff=True, is_superuser=True)
    client.force_login(root)
    assert client.get(url).status_code == 200


def test_run_now_is_refused_to_scoped_staff(staff_client, django_capture_on_commit_callbacks):
    schedule = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    periodic = PeriodicTask.objects.create(
        name="sneaky", task="taskops.tasks.cleanup_failed_tasks", interval=schedule
    )
    before = TaskRecord.objects.count()
    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(
            reverse("admin:django_celery_beat_periodictask_changelist"),
            {"action": "run_tasks", "_selected_action": [str(periodic.pk)]},
        )
    assert response.status_code == 403
    assert TaskRecord.objects.count() == before


def test_the_index_lists_only_what_the_staff_member_may_see(staff_client):
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert "Tickets" in body
    assert "Periodic tasks" not in body
    assert "Task results" not in body
    assert "Users" not in body


def test_staff_who_administer_no_organization_see_no_zenith_page(client, tenants, make_user):
    alpha, _ = tenants
    operator = make_user(organization=alpha.organization, role=Role.OPERATOR, is_staff=True)
    from django.contrib.auth.models import Permission

    operator.user_permissions.set(Permission.objects.filter(content_type__app_label="tickets"))
    client.force_login(operator)
    assert client.get(reverse("admin:tickets_ticket_changelist")).status_code == 403
    assert "Tickets" not in client.get(reverse("admin:index")).content.decode()


def test_superusers_see_every_organization(client, tenants, make_user):
    alpha, bravo = tenants
    client.force_login(make_user(username="root", is_staff=True, is_superuser=True))
    response = client.get(reverse("admin:tickets_ticket_changelist"))
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert {alpha.rows["ticket"].pk, bravo.rows["ticket"].pk} <= shown
    assert Organization.objects.count() == len(
        client.get(reverse("admin:tickets_organization_changelist")).context["cl"].result_list
    )
