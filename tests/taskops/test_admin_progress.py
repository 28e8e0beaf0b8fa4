"""The ledger's admin pages: a progress bar for running tasks, reloading while tasks run."""

from __future__ import annotations

import pytest

from taskops.models import TaskState

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/taskops/taskrecord/"
RELOAD = "window.location.reload()"


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def test_a_running_task_shows_its_bar_percentage_and_message(admin_client, make_record):
    running = make_record(
        state=TaskState.PROGRESS,
        progress={"done": 3, "total": 8, "message": "fetching <INBOX>"},
    )

    listing = admin_client.get(CHANGELIST).content.decode()
    detail = admin_client.get(f"{CHANGELIST}{running.pk}/change/").content.decode()

    for page in (listing, detail):
        assert '<progress value="3" max="8"' in page
        assert "38%" in page  # round(100 * 3 / 8)
        assert "(3/8)" in page
        assert "fetching &lt;INBOX&gt;" in page  # the message, escaped
        assert RELOAD in page


def test_pages_without_active_tasks_do_not_reload(admin_client, make_record):
    done = make_record(state=TaskState.SUCCESS, progress={"done": 8, "total": 8, "message": "done"})
    failed = make_record(state=TaskState.FAILURE)

    listing = admin_client.get(CHANGELIST).content.decode()
    assert '<progress value="8" max="8"' in listing
    assert "100%" in listing
    assert RELOAD not in listing
    assert RELOAD not in admin_client.get(f"{CHANGELIST}{done.pk}/change/").content.decode()
    assert RELOAD not in admin_client.get(f"{CHANGELIST}{failed.pk}/change/").content.decode()


def test_only_the_tasks_on_the_page_decide_the_reload(admin_client, make_record):
    make_record(state=TaskState.STARTED)
    make_record(state=TaskState.FAILURE)

    assert RELOAD in admin_client.get(CHANGELIST).content.decode()
    failed_only = admin_client.get(CHANGELIST, {"state__exact": "FAILURE"}).content.decode()
    assert RELOAD not in failed_only


def test_a_progress_report_past_its_total_is_capped(admin_client, make_record):
    make_record(state=TaskState.PROGRESS, progress={"done": 12, "total": 10, "message": ""})

    page = admin_client.get(CHANGELIST).content.decode()

    assert '<progress value="10" max="10"' in page
    assert "100%" in page
