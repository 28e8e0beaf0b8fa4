"""Alerts: rules watched every minute, incidents that fire once and recover once, deliveries.

A rule's condition is read from the task ledger (failures of tasks matching a pattern
within a window), from the integrations' own error fields (a mailbox or Slack workspace
in error for longer than the window), or from the models' live accuracy (a serving model
version whose reviewed predictions were corrected far more often than its offline
accuracy promised). While the condition holds the rule has exactly one
open incident; opening it queues a "fired" message to each destination and closing it a
"recovered" one. Messages are sent by `taskops.tasks.deliver_alert` (alerts/tasks.py) after
the evaluation commits, through the channels registered in alerts/channels/, so a Slack or
SMTP outage delays a message but never an evaluation.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

from alerts.channels import AlertSendError, channel_send
from alerts.models import (
    AlertChannel,
    AlertDelivery,
    AlertDeliveryState,
    AlertIncident,
    AlertIncidentState,
    AlertIntegration,
    AlertMessageKind,
    AlertRule,
    AlertRuleKind,
)
from integrations.models import SlackWorkspace
from integrations.selectors import MAILBOX, SLACK, integrations_in_error_list
from mlmodels.selectors import model_versions_active_live_accuracy
from taskops.base import TRANSIENT_ERRORS, TransientError
from taskops.selectors import task_failures_count
from taskops.services import task_enqueue
from tickets.models import Organization

logger = logging.getLogger(__name__)

DELIVER_TASK = "taskops.tasks.deliver_alert"
MAX_WINDOW_MINUTES = 7 * 24 * 60
MAX_THRESHOLD = 10_000
# model_accuracy rules: `threshold` is points of accuracy (live below offline), 10 unless set.
DEFAULT_ACCURACY_DROP_POINTS = 10
MAX_ACCURACY_DROP_POINTS = 100
MAX_RECIPIENTS = 50
# A delivery still pending this long after it was queued lost its task (the broker was
# down at commit time, say): the next evaluation queues it again.
REQUEUE_PENDING_AFTER = timedelta(minutes=10)
# A send that claimed a delivery and has not recorded an outcome this long after died with
# its worker (sends give up after well under a minute): the next evaluation queues it
# again, at most until MAX_ATTEMPTS. Had the message gone out just before the worker
# died, it goes out twice: the one case where "exactly once" cannot be known.
SENDING_LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 4
# What a message lists at most (task names, integrations), so a storm stays readable.
MESSAGE_MAX_ITEMS = 10

# Celery task names: dotted identifiers, plus fnmatch's wildcards and character sets.
_PATTERN_CHARS = re.compile(r"^[\w.:\-*?\[\]!]+$")
# A Slack channel id (C0123ABC) or name (#alerts, alerts): Slack allows a-z, 0-9, - and _.
_SLACK_CHANNEL = re.compile(r"^#?[\w\-.]{1,80}$")

RULE_FIELDS = (
    "name",
    "kind",
    "task_pattern",
    "integration",
    "threshold",
    "window_minutes",
    "slack_workspace",
    "slack_channel",
    "email_recipients",
    "enabled",
)


# ------------------------------------------------------------------------------
# Rules: validation and configuration
# ------------------------------------------------------------------------------
def task_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable fnmatch pattern of task names, or None."""
    if not pattern:
        return "a task name pattern is required, e.g. integrations.tasks.*"
    if len(pattern) > 255:
        return "at most 255 characters"
    if not _PATTERN_CHARS.match(pattern):
        return (
            "task names are dotted identifiers: use letters, digits, _ . : - "
            "and the wildcards * ? [...] (no spaces)"
        )
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                return "a [ inside a [...] set"
            depth = 1
        elif char == "]" and depth:
            depth = 0
    if depth:
        return "an unclosed [ (fnmatch would match it literally)"
    return None


def alert_rule_problems(
    *, organization: Organization, values: Mapping[str, Any], rule: AlertRule | None = None
) -> dict[str, str]:
    """The rule's invalid fields and why ({} when it is valid); `values` override `rule`."""

    def value(name: str, default: Any) -> Any:
        if name in values:
            return values[name]
        return getattr(rule, name) if rule is not None else default

    problems: dict[str, str] = {}
    name = str(value("name", "") or "").strip()
    if not name:
        problems["name"] = "a rule needs a name"
    else:
        clash = AlertRule.objects.filter(organization=organization, name=name)
        if rule is not None:
            clash = clash.exclude(pk=rule.pk)
        if clash.exists():
            problems["name"] = "the organization already has a rule with this name"
    kind = value("kind", AlertRuleKind.TASK_FAILURES)
    if kind not in AlertRuleKind.values:
        problems["kind"] = f"one of {', '.join(AlertRuleKind.values)}"
    elif kind == AlertRuleKind.TASK_FAILURES:
        problem = task_pattern_problem(str(value("task_pattern", "") or ""))
        if problem:
            problems["task_pattern"] = problem
    if value("integration", AlertIntegration.ANY) not in AlertIntegration.values:
        problems["integration"] = f"one of {', '.join(AlertIntegration.values)}"
    threshold = value("threshold", 1)
    if kind == AlertRuleKind.MODEL_ACCURACY:
        if not isinstance(threshold, int) or not 1 <= threshold <= MAX_ACCURACY_DROP_POINTS:
            problems["threshold"] = (
                f"points of accuracy, a whole number from 1 to {MAX_ACCURACY_DROP_POINTS}"
            )
    elif not isinstance(threshold, int) or not 1 <= threshold <= MAX_THRESHOLD:
        problems["threshold"] = f"a whole number from 1 to {MAX_THRESHOLD}"
    window = value("window_minutes", 15)
    if not isinstance(window, int) or not 1 <= window <= MAX_WINDOW_MINUTES:
        problems["window_minutes"] = f"a number of minutes from 1 to {MAX_WINDOW_MINUTES} (a week)"
    workspace = value("slack_workspace", None)
    channel = str(value("slack_channel", "") or "")
    if workspace is not None and getattr(workspace, "organization_id", None) != organization.pk:
        problems["slack_workspace"] = "not a Slack workspace of the rule's organization"
    if channel:
        if not _SLACK_CHANNEL.match(channel):
            problems["slack_channel"] = "a channel id (C0123ABC) or name (#alerts)"
        elif (
            workspace is None
            and not SlackWorkspace.objects.filter(organization=organization, enabled=True).exists()
        ):
            problems["slack_channel"] = "the organization has no enabled Slack workspace"
    recipients = value("email_recipients", [])
    if not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS:
        problems["email_recipients"] = f"a list of at most {MAX_RECIPIENTS} e-mail addresses"
    else:
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                problems["email_recipients"] = f"not an e-mail address: {address!r}"
                break
    if not channel and not recipients and "slack_channel" not in problems:
        problems["slack_channel"] = "set a Slack channel or e-mail recipients (or both)"
    return problems


def _rule_check(
    *, organization: Organization, values: Mapping[str, Any], rule: AlertRule | None = None
) -> None:
    problems = alert_rule_problems(organization=organization, values=values, rule=rule)
    if problems:
        raise ValidationError({name: [message] for name, message in problems.items()})


def alert_rule_create(*, organization: Organization, **values: Any) -> AlertRule:
    """Create a rule; raises ValidationError naming each invalid field."""
    values = {name: value for name, value in values.items() if name in RULE_FIELDS}
    if isinstance(values.get("name"), str):
        values["name"] = values["name"].strip()
    if values.get("kind") == AlertRuleKind.MODEL_ACCURACY:
        values.setdefault("threshold", DEFAULT_ACCURACY_DROP_POINTS)
    _rule_check(organization=organization, values=values)
    try:
        with transaction.atomic():
            return AlertRule.objects.create(organization=organization, **values)
    except IntegrityError as exc:  # the same name created concurrently
        raise ValidationError(
            {"name": ["the organization already has a rule with this name"]}
        ) from exc


def alert_rule_update(*, rule: AlertRule, data: Mapping[str, Any]) -> AlertRule:
    """Change a rule; disabling it closes its open incident (without a message)."""
    changes = {name: value for name, value in data.items() if name in RULE_FIELDS}
    if isinstance(changes.get("name"), str):
        changes["name"] = changes["name"].strip()
    _rule_check(organization=rule.organization, values=changes, rule=rule)
    with transaction.atomic():
        for name, value in changes.items():
            setattr(rule, name, value)
        try:
            with transaction.atomic():
                rule.save()
        except IntegrityError as exc:
            raise ValidationError(
                {"name": ["the organization already has a rule with this name"]}
            ) from exc
        if not rule.enabled:
            _incident_close_silently(rule=rule, reason="rule disabled")
    return rule


def alert_rules_set_enabled(*, rules: models.QuerySet[AlertRule], enabled: bool) -> int:
    """Enable or disable rules; disabled rules' open incidents are closed. Returns how many."""
    changed = 0
    for rule in rules.select_related("organization"):
        if rule.enabled != enabled:
            alert_rule_update(rule=rule, data={"enabled": enabled})
            changed += 1
    return changed


def alert_rule_delete(*, rule: AlertRule) -> None:
    """Delete a rule with its incidents and their delivery records."""
    rule.delete()


def _incident_close_silently(*, rule: AlertRule, reason: str) -> None:
    now = timezone.now()
    AlertIncident.objects.filter(rule=rule, state=AlertIncidentState.OPEN).update(
        state=AlertIncidentState.RESOLVED, resolved_at=now, resolution=reason
    )


# ------------------------------------------------------------------------------
# Conditions and messages
# ------------------------------------------------------------------------------
@dataclass
class AlertCondition:
    """What one evaluation of a rule saw."""

    firing: bool
    count: int
    headline: str
    lines: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _when(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M %Z}"


def _minutes(minutes: int) -> str:
    return _plural(minutes, "minute")


_WATCHED_PROVIDERS = {
    AlertIntegration.ANY: (MAILBOX, SLACK),
    AlertIntegration.MAILBOX: (MAILBOX,),
    AlertIntegration.SLACK: (SLACK,),
}


def alert_condition_check(*, rule: AlertRule, now: datetime) -> AlertCondition:
    """Whether the rule's condition holds at `now`, with the evidence."""
    since = now - timedelta(minutes=rule.window_minutes)
    if rule.kind == AlertRuleKind.TASK_FAILURES:
        counts, task_ids, last_error = task_failures_count(
            organization=rule.organization,
            pattern=rule.task_pattern,
            since=since,
            id_limit=MESSAGE_MAX_ITEMS,
        )
        count = sum(counts.values())
        lines = [f"{name}: {n}" for name, n in counts.most_common(MESSAGE_MAX_ITEMS)]
        if len(counts) > MESSAGE_MAX_ITEMS:
            lines.append(f"… and {len(counts) - MESSAGE_MAX_ITEMS} more task names")
        if last_error:
            lines.append(f"last error: {last_error.strip().splitlines()[-1][:300]}")
        return AlertCondition(
            firing=count >= rule.threshold,
            count=count,
            headline=(
                f"{_plural(count, 'failure')} of {rule.task_pattern} in the last "
                f"{_minutes(rule.window_minutes)} (threshold {rule.threshold})"
            ),
            lines=lines,
            details={
                "pattern": rule.task_pattern,
                "window_minutes": rule.window_minutes,
                "tasks": dict(counts),
                "task_ids": task_ids,
                "last_error": last_error[:1000],
            },
        )
    if rule.kind == AlertRuleKind.INTEGRATION_ERROR:
        broken = integrations_in_error_list(
            organization=rule.organization,
            since=since,
            providers=_WATCHED_PROVIDERS[AlertIntegration(rule.integration)],
        )
        label = {"mailbox": "mailbox", "slack_workspace": "Slack workspace"}
        lines = [
            f'{label[item["kind"]]} "{item["name"]}"'
            + (f" ({item['error_kind']})" if item["error_kind"] else "")
            + f" in error since {_when(datetime.fromisoformat(item['since']))}: "
            + item["error"].strip().splitlines()[-1][:300]
            for item in broken[:MESSAGE_MAX_ITEMS]
        ]
        if len(broken) > MESSAGE_MAX_ITEMS:
            lines.append(f"… and {len(broken) - MESSAGE_MAX_ITEMS} more")
        return AlertCondition(
            firing=len(broken) >= rule.threshold,
            count=len(broken),
            headline=(
                f"{_plural(len(broken), 'integration')} in error for over "
                f"{_minutes(rule.window_minutes)} (threshold {rule.threshold})"
            ),
            lines=lines,
            details={
                "integration": rule.integration,
                "window_minutes": rule.window_minutes,
                "integrations": broken,
            },
        )
    if rule.kind == AlertRuleKind.MODEL_ACCURACY:
        return _model_accuracy_check(rule=rule)
    raise ValueError(f"unknown alert rule kind {rule.kind!r}")


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"


def _model_accuracy_check(*, rule: AlertRule) -> AlertCondition:
    """Serving model versions whose live accuracy fell `threshold` points below the offline one."""
    min_reviews = settings.ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS
    judged, degraded = [], []
    for item in model_versions_active_live_accuracy(organization=rule.organization):
        live, offline = item["live_accuracy"], item["offline_accuracy"]
        if live is None or offline is None or item["reviewed"] < min_reviews:
            continue
        # Rounded: 0.9 - 0.8 is 9.999… points in floating point, and 10 points is a drop of 10.
        drop = round((offline - live) * 100, 6)
        entry = {**item, "drop_points": round(drop, 2)}
        judged.append(entry)
        if drop >= rule.threshold:
            degraded.append(entry)
    lines = [
        f"{item['target']} model v{item['version']}: live accuracy "
        f"{_percent(item['live_accuracy'])} on {_plural(item['reviewed'], 'reviewed prediction')} "
        f"({item['changed']} corrected), "
        f"offline {_percent(item['offline_accuracy'])}: {item['drop_points']:.1f} points below"
        for item in degraded[:MESSAGE_MAX_ITEMS]
    ]
    return AlertCondition(
        firing=bool(degraded),
        count=len(degraded),
        headline=(
            f"{_plural(len(degraded), 'model')} with a live accuracy {rule.threshold} points or "
            f"more below the offline one (judged after {min_reviews} reviewed predictions)"
        ),
        lines=lines,
        details={
            "threshold_points": rule.threshold,
            "min_reviews": min_reviews,
            "models": degraded,
            "judged": judged,
        },
    )


def _message(
    *, rule: AlertRule, kind: str, condition: AlertCondition, note: str = ""
) -> tuple[str, str]:
    """(subject, text) of a fired or recovered message."""
    verb = "FIRING" if kind == AlertMessageKind.FIRED else "RECOVERED"
    subject = f"[Zenith] {verb}: {rule.name} ({rule.organization.name})"
    if kind == AlertMessageKind.FIRED:
        head = f'{subject}\nAlert "{rule.name}" fired: {condition.headline}.'
    else:
        head = f'{subject}\nAlert "{rule.name}" recovered: now {condition.headline}.'
    body = [head, *(f"• {line}" for line in condition.lines)]
    if note:
        body.append(note)
    return subject[:255], "\n".join(body)


# ------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------
def _deliveries_create(
    *, rule: AlertRule, incident: AlertIncident, kind: str, subject: str, text: str
) -> list[int]:
    deliveries = []
    if rule.slack_channel:
        deliveries.append(
            AlertDelivery(
                incident=incident,
                channel=AlertChannel.SLACK,
                target=rule.slack_channel,
                kind=kind,
                subject=subject,
                text=text,
            )
        )
    if rule.email_recipients:
        deliveries.append(
            AlertDelivery(
                incident=incident,
                channel=AlertChannel.EMAIL,
                target=", ".join(rule.email_recipients),
                kind=kind,
                subject=subject,
                text=text,
            )
        )
    for delivery in deliveries:
        delivery.save()
    return [delivery.pk for delivery in deliveries]


def alert_deliveries_enqueue(*, organization_id: int, delivery_ids: list[int]) -> None:
    """Queue a send task per delivery; a broker outage is logged, not raised.

    A delivery that could not be queued stays pending; a later evaluation queues it again.
    """
    for delivery_id in delivery_ids:
        try:
            task_enqueue(
                name=DELIVER_TASK,
                kwargs={"delivery_id": delivery_id},
                organization_id=organization_id,
            )
        except Exception:
            logger.exception("alert delivery %s could not be queued; it stays pending", delivery_id)


def alert_rule_evaluate(*, rule: AlertRule, now: datetime | None = None) -> str:
    """Check one rule; open or close its incident. Returns fired, ongoing, recovered or quiet.

    Deliveries are queued once the transaction commits.
    """
    now = now or timezone.now()
    with transaction.atomic():
        # Two evaluations of one rule (beat and "run now") take turns here.
        locked = AlertRule.objects.select_for_update().filter(pk=rule.pk, enabled=True).first()
        if locked is None:
            return "disabled"
        rule = locked
        condition = alert_condition_check(rule=rule, now=now)
        incident = AlertIncident.objects.filter(rule=rule, state=AlertIncidentState.OPEN).first()
        delivery_ids: list[int] = []
        if condition.firing and incident is None:
            subject, text = _message(rule=rule, kind=AlertMessageKind.FIRED, condition=condition)
            incident = AlertIncident.objects.create(
                rule=rule,
                organization=rule.organization,
                count=condition.count,
                details=condition.details,
                summary=text,
                opened_at=now,
                last_seen_at=now,
            )
            delivery_ids = _deliveries_create(
                rule=rule,
                incident=incident,
                kind=AlertMessageKind.FIRED,
                subject=subject,
                text=text,
            )
            outcome = "fired"
        elif condition.firing and incident is not None:
            AlertIncident.objects.filter(pk=incident.pk).update(last_seen_at=now)
            outcome = "ongoing"
        elif incident is not None:
            minutes = max(1, round((now - incident.opened_at).total_seconds() / 60))
            note = f"It fired at {_when(incident.opened_at)}, {_minutes(minutes)} ago."
            subject, text = _message(
                rule=rule, kind=AlertMessageKind.RECOVERED, condition=condition, note=note
            )
            AlertIncident.objects.filter(pk=incident.pk).update(
                state=AlertIncidentState.RESOLVED, resolved_at=now, resolution="recovered"
            )
            delivery_ids = _deliveries_create(
                rule=rule,
                incident=incident,
                kind=AlertMessageKind.RECOVERED,
                subject=subject,
                text=text,
            )
            outcome = "recovered"
        else:
            outcome = "quiet"
        AlertRule.objects.filter(pk=rule.pk).update(last_evaluated_at=now)
        if delivery_ids:
            organization_id = rule.organization_id
            transaction.on_commit(
                lambda: alert_deliveries_enqueue(
                    organization_id=organization_id, delivery_ids=delivery_ids
                )
            )
    if outcome in ("fired", "recovered"):
        logger.info(
            "alert %s (%s) %s: %s", rule.name, rule.organization, outcome, condition.headline
        )
    return outcome


def alert_rules_evaluate(
    *, organization: Organization | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Evaluate every enabled rule (of one organization, or all); one rule's error skips only it.

    Also queues again deliveries whose task was lost before it ran. Returns outcome counts.
    """
    now = now or timezone.now()
    rules = AlertRule.objects.filter(enabled=True).select_related("organization").order_by("pk")
    if organization is not None:
        rules = rules.filter(organization=organization)
    outcomes: Counter[str] = Counter()
    for rule in rules:
        try:
            outcomes[alert_rule_evaluate(rule=rule, now=now)] += 1
        except Exception:
            # A rule that cannot be evaluated (a kind this version does not know, a
            # database hiccup on its rows) must not keep the other rules from alerting.
            logger.exception("alert rule %s (%s) could not be evaluated", rule.pk, rule.name)
            outcomes["error"] += 1
    outcomes["requeued"] = alert_deliveries_requeue(organization=organization, now=now)
    return dict(outcomes)


def alert_deliveries_requeue(
    *, organization: Organization | None = None, now: datetime | None = None
) -> int:
    """Queue again the deliveries whose task was lost; returns how many.

    That is: still pending REQUEUE_PENDING_AFTER after they were created, or claimed by a
    send that recorded nothing for SENDING_LEASE (its worker died). One whose sends were
    cut short MAX_ATTEMPTS times is failed instead (the admin can send it again).
    """
    now = now or timezone.now()
    lapsed = Q(state=AlertDeliveryState.SENDING, last_attempt_at__lt=now - SENDING_LEASE)
    stale = AlertDelivery.objects.filter(
        Q(
            state=AlertDeliveryState.PENDING,
            attempts=0,
            created_at__lt=now - REQUEUE_PENDING_AFTER,
        )
        | (lapsed & Q(attempts__lt=MAX_ATTEMPTS))
    )
    if organization is not None:
        stale = stale.filter(incident__organization=organization)
    AlertDelivery.objects.filter(
        lapsed,
        attempts__gte=MAX_ATTEMPTS,
        **({"incident__organization": organization} if organization is not None else {}),
    ).update(
        state=AlertDeliveryState.FAILED,
        error=f"{MAX_ATTEMPTS} attempts were cut short (the worker died while sending)",
    )
    rows = list(stale.values_list("pk", "incident__organization_id")[:500])
    for delivery_id, organization_id in rows:
        alert_deliveries_enqueue(organization_id=organization_id, delivery_ids=[delivery_id])
    return len(rows)


# ------------------------------------------------------------------------------
# Delivery
# ------------------------------------------------------------------------------
def _delivery_claim(*, delivery_id: int, now: datetime) -> AlertDelivery | None:
    """Mark the delivery SENDING and count the attempt, committed before anything is sent.

    None when there is nothing to send: it is sent, failed for good, gone, or claimed by a
    send still in flight (a redelivered task leaves it to that one).
    """
    claimable = Q(state__in=[AlertDeliveryState.PENDING, AlertDeliveryState.RETRYING]) | Q(
        state=AlertDeliveryState.SENDING, last_attempt_at__lt=now - SENDING_LEASE
    )
    # durable: the claim must be committed (visible to every other task) before the send.
    with transaction.atomic(durable=True):
        delivery = (
            AlertDelivery.objects.select_for_update(of=("self",))
            .select_related("incident__rule")
            .filter(claimable, pk=delivery_id)
            .first()
        )
        if delivery is None:
            return None
        delivery.state = AlertDeliveryState.SENDING
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.save(update_fields=["state", "attempts", "last_attempt_at"])
    return delivery


def _delivery_record(
    *, delivery: AlertDelivery, failure: AlertSendError | None, final_attempt: bool
) -> None:
    """Record how the claimed attempt went (only if the claim is still ours).

    `error` keeps the last failed attempt's error, also once a later attempt succeeds.
    """
    if failure is None:
        delivery.state = AlertDeliveryState.SENT
        delivery.sent_at = timezone.now()
    else:
        retry = failure.transient and not final_attempt
        delivery.state = AlertDeliveryState.RETRYING if retry else AlertDeliveryState.FAILED
        delivery.error = str(failure)[:2000]
    with transaction.atomic(durable=True):
        recorded = AlertDelivery.objects.filter(
            pk=delivery.pk, state=AlertDeliveryState.SENDING, attempts=delivery.attempts
        ).update(state=delivery.state, sent_at=delivery.sent_at, error=delivery.error)
    if not recorded:
        logger.warning(
            "alert delivery %s: attempt %s ended after its claim lapsed; another took over",
            delivery.pk,
            delivery.attempts,
        )


def alert_deliver(*, delivery_id: int, final_attempt: bool = True) -> AlertDelivery | None:
    """Send one delivery and record the attempt; a no-op once it is sent or failed for good.

    Claim (SENDING, committed) -> send outside any transaction -> record the outcome, so no
    row lock is held while Slack or the mail server takes its time, and a redelivered task
    finds the message sent or in flight instead of sending it twice. A transient failure is
    recorded and raised as TransientError, so the task retries it; on the final attempt
    the delivery is marked failed. Other failures (no workspace, a revoked token, an unknown
    channel) are recorded as failed and not raised.
    """
    delivery = _delivery_claim(delivery_id=delivery_id, now=timezone.now())
    if delivery is None:
        return AlertDelivery.objects.filter(pk=delivery_id).first()
    failure: AlertSendError | None = None
    unexpected: Exception | None = None
    try:
        channel_send(delivery=delivery)
    except AlertSendError as exc:
        failure = exc
    except Exception as exc:  # a bug or a database error: recorded, then raised as it was
        unexpected = exc
        failure = AlertSendError(
            f"{type(exc).__name__}: {exc}", transient=isinstance(exc, TRANSIENT_ERRORS)
        )
    _delivery_record(delivery=delivery, failure=failure, final_attempt=final_attempt)
    if failure is None:
        return delivery
    logger.warning(
        "alert delivery %s (%s to %s), attempt %s: %s",
        delivery.pk,
        delivery.channel,
        delivery.target,
        delivery.attempts,
        failure,
    )
    if unexpected is not None:
        raise unexpected
    if failure.transient:
        raise TransientError(f"alert delivery {delivery.pk}: {failure}") from failure
    return delivery


def alert_delivery_resend(*, delivery: AlertDelivery) -> bool:
    """Try a failed delivery again (after fixing a token or a channel); False unless failed."""
    updated = AlertDelivery.objects.filter(pk=delivery.pk, state=AlertDeliveryState.FAILED).update(
        state=AlertDeliveryState.PENDING
    )
    if updated:
        organization_id = delivery.incident.organization_id
        transaction.on_commit(
            lambda: alert_deliveries_enqueue(
                organization_id=organization_id, delivery_ids=[delivery.pk]
            )
        )
    return bool(updated)
