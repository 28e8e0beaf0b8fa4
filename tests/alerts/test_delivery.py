"""Sending an alert: claim the row (committed), send outside any transaction, record the outcome.

So Slack or a mail server taking its time never holds a row lock, a redelivered send task
never sends a message that is sent or being sent, and a send whose worker died is taken up
again once its claim lapses.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.mail.backends.locmem import EmailBackend
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from alerts import channels, services
from alerts.channels import AlertSendError, channel_register, channel_send
from alerts.models import AlertDelivery, AlertDeliveryState, AlertIncident
from taskops.base import TransientError
from taskops.models import TaskState
from tests.alerts.factories import AlertRuleFactory
from tests.taskops.factories import TaskRecordFactory
from tickets.models import Organization

PEEKED: list[tuple[str, str]] = []


class PeekingBackend(EmailBackend):
    """Django's in-memory mail backend that, while "sending", looks at the delivery row from
    another database connection: which state is committed, and whether it can be locked."""

    def send_messages(self, messages: Any) -> int:
        def peek() -> None:
            try:
                with transaction.atomic():
                    row = AlertDelivery.objects.select_for_update(nowait=True).get()
                    PEEKED.append((row.state, "unlocked"))
            except DatabaseError:
                PEEKED.append(("?", "locked"))
            finally:
                connection.close()

        thread = threading.Thread(target=peek)
        thread.start()
        thread.join()
        return super().send_messages(messages)


def fired_delivery(organization: Organization, **rule_fields: Any) -> AlertDelivery:
    """A rule that fired once: its one delivery, pending."""
    rule = AlertRuleFactory(
        organization=organization, task_pattern="taskops.tasks.*", threshold=1, **rule_fields
    )
    TaskRecordFactory(
        name="taskops.tasks.diagnostic_fail", organization=organization, state=TaskState.FAILURE
    )
    assert services.alert_rule_evaluate(rule=rule) == "fired"
    return AlertDelivery.objects.get()


@pytest.mark.django_db(transaction=True)
def test_while_a_message_is_sent_its_row_is_committed_as_sending_and_locked_by_no_one(
    organization, settings, mailoutbox
):
    settings.EMAIL_BACKEND = f"{__name__}.PeekingBackend"
    PEEKED.clear()
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])

    services.alert_deliver(delivery_id=delivery.pk)

    assert PEEKED == [("sending", "unlocked")]
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("sent", 1)
    assert [m.to for m in mailoutbox] == [["ops@acme.test"]]


def test_a_redelivered_task_leaves_a_send_in_flight_alone_and_takes_over_a_dead_one(
    db, organization, mailoutbox
):
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])
    now = timezone.now()
    # Another worker claimed it a minute ago and is talking to the mail server.
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        state=AlertDeliveryState.SENDING, attempts=1, last_attempt_at=now - timedelta(minutes=1)
    )

    in_flight = services.alert_deliver(delivery_id=delivery.pk)

    assert (in_flight.state, in_flight.attempts) == ("sending", 1)
    assert mailoutbox == []
    assert services.alert_deliveries_requeue(now=now) == 0

    # That worker died mid-send: once its claim lapses the evaluation queues it again.
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        last_attempt_at=now - services.SENDING_LEASE - timedelta(seconds=1)
    )
    assert services.alert_deliveries_requeue() == 1
    sent = services.alert_deliver(delivery_id=delivery.pk)

    assert (sent.state, sent.attempts) == ("sent", 2)
    assert len(mailoutbox) == 1
    assert services.alert_deliver(delivery_id=delivery.pk).attempts == 2
    assert len(mailoutbox) == 1


def test_a_send_cut_short_on_every_attempt_ends_failed_not_queued_forever(db, organization):
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])
    long_ago = timezone.now() - services.SENDING_LEASE - timedelta(minutes=1)
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        state=AlertDeliveryState.SENDING,
        attempts=services.MAX_ATTEMPTS,
        last_attempt_at=long_ago,
    )

    assert services.alert_deliveries_requeue() == 0

    delivery.refresh_from_db()
    assert delivery.state == "failed"
    assert "cut short" in delivery.error


def test_a_channel_nobody_installed_fails_the_delivery_for_good(db, organization):
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])
    AlertDelivery.objects.filter(pk=delivery.pk).update(channel="carrier-pigeon")

    failed = services.alert_deliver(delivery_id=delivery.pk, final_attempt=False)

    assert (failed.state, failed.attempts) == ("failed", 1)
    assert "no alert channel 'carrier-pigeon'" in failed.error


def test_a_transient_error_is_recorded_and_retried_and_the_final_attempt_fails(
    db, organization, monkeypatch
):
    attempts: list[int] = []

    def flaky(*, delivery: AlertDelivery) -> None:
        attempts.append(delivery.attempts)
        raise AlertSendError("pager gateway busy", transient=True)

    monkeypatch.setattr(channels, "_channels", dict(channels._channels))
    channel_register(name="pager", send=flaky)
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])
    AlertDelivery.objects.filter(pk=delivery.pk).update(channel="pager")

    with pytest.raises(TransientError, match="pager gateway busy"):
        services.alert_deliver(delivery_id=delivery.pk, final_attempt=False)
    assert AlertDelivery.objects.get().state == "retrying"
    with pytest.raises(TransientError):
        services.alert_deliver(delivery_id=delivery.pk, final_attempt=True)

    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, attempts) == ("failed", 2, [1, 2])
    assert delivery.error == "pager gateway busy"
    assert AlertIncident.objects.get().state == "open"


def test_the_app_registers_the_slack_and_email_channels(db, organization, mailoutbox):
    delivery = fired_delivery(organization, email_recipients=["ops@acme.test"])

    channel_send(delivery=delivery)
    delivery.channel = "slack"
    with pytest.raises(AlertSendError, match="no enabled Slack workspace"):
        channel_send(delivery=delivery)

    assert mailoutbox[0].subject == delivery.subject
