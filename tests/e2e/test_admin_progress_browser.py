"""The ledger in Chromium: a running task's progress bar, then a bulk retry of failed tasks."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from taskops.models import TaskRecord, TaskState
from taskops.tasks import diagnostic_fail, diagnostic_sleep
from tests.e2e.test_admin_browser import PASSWORD, browser_page, shot  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_progress_bar_then_bulk_retry(live_server, processes, browser_page, make_user):  # noqa: F811
    page = browser_page
    processes.worker(worker_type="all", concurrency=2)
    make_user(username="ops", is_staff=True, is_superuser=True, password=PASSWORD)
    base = live_server.url

    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    # Two tasks fail for good; one sleeps, reporting progress every second.
    failed_ids = [diagnostic_fail.delay(permanent=True).id for _ in range(2)]
    wait_until(
        lambda: (
            TaskRecord.objects.filter(task_id__in=failed_ids, state=TaskState.FAILURE).count() == 2
        ),
        timeout=60,
        what="both diagnostic_fail tasks to fail",
    )
    sleeping = diagnostic_sleep.delay(seconds=25).id
    wait_until(
        lambda: TaskRecord.objects.filter(
            task_id=sleeping, state=TaskState.PROGRESS, progress__done__gte=2
        ).exists(),
        timeout=60,
        what="the sleeping task to report progress",
    )

    # The list shows its bar; the page reloads by itself and the bar moves on.
    page.goto(f"{base}/admin/taskops/taskrecord/")
    row = page.locator("tr", has_text=sleeping)
    bar = row.locator("progress")
    first = int(bar.get_attribute("value"))
    assert bar.get_attribute("max") == "25"
    assert re.search(r"\d+% \(\d+/25\) sleeping", row.inner_text())
    shot(page, "progress-01-list")
    page.wait_for_function(
        f"document.querySelector('tr:has(a[href]) progress') && "
        f"[...document.querySelectorAll('progress')].some(p => +p.value > {first + 2})",
        timeout=30_000,
    )
    shot(page, "progress-02-list-refreshed")

    # Its detail page shows the same bar.
    record = TaskRecord.objects.get(task_id=sleeping)
    page.goto(f"{base}/admin/taskops/taskrecord/{record.pk}/change/")
    assert page.locator(".field-progress_bar progress").get_attribute("max") == "25"
    assert "sleeping" in page.inner_text(".field-progress_bar")
    shot(page, "progress-03-detail")

    # Select the failed tasks (the reload waits while rows are selected) and retry them.
    page.goto(f"{base}/admin/taskops/taskrecord/?state__exact=FAILURE")
    failed_pks = list(
        TaskRecord.objects.filter(task_id__in=failed_ids).values_list("pk", flat=True)
    )
    for pk in failed_pks:
        page.check(f"input[name=_selected_action][value='{pk}']")
    page.wait_for_timeout(6_000)  # longer than the 5 s reload: the selection must survive
    for pk in failed_pks:
        assert page.is_checked(f"input[name=_selected_action][value='{pk}']")
    page.select_option("select[name=action]", "retry_tasks")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    message = page.inner_text(".messagelist")
    shot(page, "progress-04-bulk-retry")
    for task_id in failed_ids:
        assert f"taskops.tasks.diagnostic_fail {task_id} retried as" in message.lower()

    retries = TaskRecord.objects.filter(retry_of__in=failed_ids)
    assert retries.count() == 2
    assert {r.retry_of for r in retries} == set(failed_ids)
    assert {r.name for r in retries} == {"taskops.tasks.diagnostic_fail"}
    assert all(r.kwargs.get("permanent") is True for r in retries)
