"""The admin by tenant in Chromium: a scoped staff member logs in and tries organization B."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from alerts.models import AlertRule
from taskops.models import TaskRecord
from tests.security.conftest import STAFF_PASSWORD
from tests.support.browser import chromium_page

pytestmark = [pytest.mark.e2e]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "admin-scoping-browser"


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_page(monkeypatch, OUTPUT) as page:
        yield page


def test_scoped_staff_sees_and_acts_on_their_organization_only(
    live_server, browser_page, tenants, scoped_staff
):
    page = browser_page
    alpha, bravo = tenants
    base = live_server.url

    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", scoped_staff.username)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    index = page.inner_text("#content-main")
    assert "Tickets" in index
    assert "Periodic tasks" not in index
    assert "Users" not in index
    page.screenshot(path=str(OUTPUT / "01-index.png"), full_page=True)

    # The ticket list: A's ticket, not B's; the organization filter offers A alone.
    page.goto(f"{base}{reverse('admin:tickets_ticket_changelist')}")
    listing = page.inner_text("#changelist")
    assert "alpha printer on fire" in listing
    assert "bravo printer on fire" not in listing
    # Not even B's name, in the filters at the side.
    assert "bravo" not in page.content().lower()
    page.screenshot(path=str(OUTPUT / "02-tickets.png"), full_page=True)

    # B's ticket, mailbox and task by their URLs: not found.
    for obj, view in [
        (bravo.rows["ticket"], "admin:tickets_ticket_change"),
        (bravo.rows["mailbox"], "admin:integrations_mailbox_change"),
        (bravo.rows["taskrecord"], "admin:taskops_taskrecord_change"),
    ]:
        response = page.goto(f"{base}{reverse(view, args=[obj.pk])}")
        assert response is not None
        assert response.status in (403, 404), (view, response.status)
    page.screenshot(path=str(OUTPUT / "03-other-tenant.png"), full_page=True)

    # Schedules are superuser-only, so "Run now" is out of reach.
    response = page.goto(f"{base}{reverse('admin:django_celery_beat_periodictask_changelist')}")
    assert response is not None
    assert response.status == 403

    # A tampered form: the checkbox of A's rule made to carry B's id, then "Disable".
    page.goto(f"{base}{reverse('admin:alerts_alertrule_changelist')}")
    own = alpha.rows["alertrule"].pk
    checkbox = f"input[name=_selected_action][value='{own}']"
    page.eval_on_selector(checkbox, "(el, id) => el.value = String(id)", bravo.rows["alertrule"].pk)
    page.check(f"input[name=_selected_action][value='{bravo.rows['alertrule'].pk}']")
    page.select_option("select[name=action]", "disable_rules")
    page.click("button[name=index]")
    page.wait_for_selector("#changelist")
    page.screenshot(path=str(OUTPUT / "04-tampered-action.png"), full_page=True)
    assert "0 rule(s) disabled." in page.inner_text(".messagelist")
    assert AlertRule.objects.get(pk=bravo.rows["alertrule"].pk).enabled

    # The same action on A's own rule works.
    page.check(checkbox)
    page.select_option("select[name=action]", "disable_rules")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert "1 rule(s) disabled." in page.inner_text(".messagelist")
    assert not AlertRule.objects.get(pk=own).enabled

    # B's failed task cannot be retried from the ledger either.
    before = TaskRecord.objects.count()
    page.goto(f"{base}{reverse('admin:taskops_taskrecord_changelist')}")
    assert bravo.rows["taskrecord"].task_id not in page.inner_text("#changelist")
    assert TaskRecord.objects.count() == before
