"""Alerts: rules watched every minute, incidents that fire once and recover once, deliveries.

A rule's condition is read from the task ledger (failures of tasks matching a pattern
within a window) or from the integrations' own error fields (a mailbox or Slack workspace
in error for longer than the window). While the condition holds the rule has exactly one
open incident; opening it queues a "fired" message to each destination and closing it a
"recovered" one. Messages are sent by `taskops.tasks.deliver_alert` after the evaluation
commits, so a Slack or SMTP outage delays a message but never an evaluation.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import smtplib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from taskops.base import TransientError
from taskops.models import (
    AlertChannel,
    AlertDelivery,
    AlertDeliveryState,
    AlertIncident,
    AlertIncidentState,
    AlertIntegration,
    AlertMessageKind,
    AlertRule,
    AlertRuleKind,
    TaskRecord,
    TaskState,
)
from tickets.models import Organization
from tickets.selectors import organization_list_for_user

logger = logging.getLogger(__name__)

DELIVER_TASK = "taskops.tasks.deliver_alert"
MAX_WINDOW_MINUTES = 7 * 24 * 60
MAX_THRESHOLD = 10_000
MAX_RECIPIENTS = 50
# A delivery still pending this long after it was queued lost its task (the broker was
# down at commit time, say): the next evaluation queues it again.
REQUEUE_PENDING_AFTER = timedelta(minutes=10)
SLACK_TIMEOUT_SECONDS = 10
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
    from integrations.models import SlackWorkspace

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
    if not isinstance(threshold, int) or not 1 <= threshold <= MAX_THRESHOLD:
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
# Reads
# ------------------------------------------------------------------------------
def alert_rule_list_for_user(*, user: Any) -> models.QuerySet[AlertRule]:
    """Rules of the organizations the caller belongs to."""
    return AlertRule.objects.filter(
        organization__in=organization_list_for_user(user=user)
    ).select_related("organization")


def alert_incident_list_for_user(*, user: Any) -> models.QuerySet[AlertIncident]:
    """Incidents of the caller's organizations, newest first, with their deliveries."""
    return (
        AlertIncident.objects.filter(organization__in=organization_list_for_user(user=user))
        .select_related("rule", "organization")
        .prefetch_related("deliveries")
        .order_by("-opened_at", "-id")
    )


def task_failures_count(
    *, organization: Organization, pattern: str, since: datetime
) -> tuple[Counter[str], list[str], str]:
    """Failures since `since` of tasks matching `pattern`: per name, newest ids, last error."""
    # updated_at >= finished_at (the finishing write sets both), so this bound lets the
    # (state, updated_at) index find the rows.
    failures = TaskRecord.objects.filter(
        organization=organization,
        state=TaskState.FAILURE,
        updated_at__gte=since,
        finished_at__gte=since,
    )
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    if prefix:
        failures = failures.filter(name__startswith=prefix)
    counts: Counter[str] = Counter()
    task_ids: list[str] = []
    last_error = ""
    for name, task_id, error in failures.order_by("-finished_at", "-id").values_list(
        "name", "task_id", "error"
    ):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        counts[name] += 1
        if len(task_ids) < MESSAGE_MAX_ITEMS:
            task_ids.append(task_id)
        if not last_error and error:
            last_error = error
    return counts, task_ids, last_error


def integrations_in_error_list(
    *, organization: Organization, integration: str, since: datetime
) -> list[dict[str, Any]]:
    """Enabled mailboxes and Slack workspaces whose error has lasted since before `since`.

    An integration's error began after its last success (a mailbox's `last_success_at`, a
    workspace's `last_sync_at`; creation when it never succeeded): each success clears
    the error, so "in error since at least then". Syncs run every 5 to 10 minutes, so
    that is at most one sync interval early.
    """
    from integrations.models import Mailbox, SlackWorkspace

    found: list[dict[str, Any]] = []
    # values(): credentials are never loaded (one that no key decrypts would raise).
    if integration in (AlertIntegration.ANY, AlertIntegration.MAILBOX):
        mailboxes = (
            Mailbox.objects.filter(organization=organization, enabled=True)
            .exclude(last_error="")
            .annotate(error_since=Coalesce("last_success_at", "created_at"))
            .filter(error_since__lte=since)
            .order_by("name")
            .values("id", "name", "last_error", "last_error_kind", "error_since")
        )
        found += [
            {
                "kind": "mailbox",
                "id": row["id"],
                "name": row["name"],
                "error": row["last_error"],
                "error_kind": row["last_error_kind"],
                "since": row["error_since"].isoformat(),
            }
            for row in mailboxes
        ]
    if integration in (AlertIntegration.ANY, AlertIntegration.SLACK):
        workspaces = (
            SlackWorkspace.objects.filter(organization=organization, enabled=True)
            .exclude(last_error="")
            .annotate(error_since=Coalesce("last_sync_at", "created_at"))
            .filter(error_since__lte=since)
            .order_by("team_id")
            .values("id", "name", "team_id", "last_error", "error_since")
        )
        found += [
            {
                "kind": "slack_workspace",
                "id": row["id"],
                "name": row["name"] or row["team_id"],
                "error": row["last_error"],
                "error_kind": "",
                "since": row["error_since"].isoformat(),
            }
            for row in workspaces
        ]
    return found


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


def alert_condition_check(*, rule: AlertRule, now: datetime) -> AlertCondition:
    """Whether the rule's condition holds at `now`, with the evidence."""
    since = now - timedelta(minutes=rule.window_minutes)
    if rule.kind == AlertRuleKind.TASK_FAILURES:
        counts, task_ids, last_error = task_failures_count(
            organization=rule.organization, pattern=rule.task_pattern, since=since
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
            organization=rule.organization, integration=rule.integration, since=since
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
    raise ValueError(f"unknown alert rule kind {rule.kind!r}")


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
    from taskops.services import task_enqueue

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
    """Queue again the deliveries still pending REQUEUE_PENDING_AFTER after they were created."""
    now = now or timezone.now()
    stale = AlertDelivery.objects.filter(
        state=AlertDeliveryState.PENDING,
        attempts=0,
        created_at__lt=now - REQUEUE_PENDING_AFTER,
    )
    if organization is not None:
        stale = stale.filter(incident__organization=organization)
    rows = list(stale.values_list("pk", "incident__organization_id")[:500])
    for delivery_id, organization_id in rows:
        alert_deliveries_enqueue(organization_id=organization_id, delivery_ids=[delivery_id])
    return len(rows)


# ------------------------------------------------------------------------------
# Delivery
# ------------------------------------------------------------------------------
class AlertSendError(Exception):
    """A message could not be sent; `transient` when trying again later may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _slack_send(*, delivery: AlertDelivery) -> None:
    from integrations.crypto import DecryptionError
    from integrations.models import SlackWorkspace
    from integrations.slack.client import (
        SlackClientError,
        SlackTransientError,
        make_client,
        post_message,
    )

    rule = delivery.incident.rule
    workspaces = SlackWorkspace.objects.filter(organization_id=rule.organization_id, enabled=True)
    if rule.slack_workspace_id is not None:
        workspaces = workspaces.filter(pk=rule.slack_workspace_id)
    try:
        workspace = workspaces.order_by("pk").first()
    except DecryptionError as exc:
        raise AlertSendError(f"the Slack bot token: {exc}", transient=False) from exc
    if workspace is None or not workspace.bot_token:
        raise AlertSendError(
            "the organization has no enabled Slack workspace with a bot token", transient=False
        )
    client = make_client(
        token=workspace.bot_token,
        base_url=settings.SLACK_API_URL,
        max_rate_limit_retries=1,
        max_connection_retries=1,
        timeout=SLACK_TIMEOUT_SECONDS,
    )
    try:
        post_message(client=client, channel=delivery.target, text=delivery.text)
    except SlackTransientError as exc:
        raise AlertSendError(str(exc), transient=True) from exc
    except SlackClientError as exc:  # invalid_auth, channel_not_found, not_in_channel...
        raise AlertSendError(str(exc), transient=False) from exc


def _email_send(*, delivery: AlertDelivery) -> None:
    recipients = [address.strip() for address in delivery.target.split(",") if address.strip()]
    try:
        send_mail(delivery.subject, delivery.text, None, recipients, fail_silently=False)
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertSendError(f"recipients refused: {exc.recipients}", transient=False) from exc
    except smtplib.SMTPResponseException as exc:
        # 4xx: the server is busy or greylisting; 5xx: it will never take this message.
        message = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
        raise AlertSendError(message, transient=400 <= exc.smtp_code < 500) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertSendError(f"{type(exc).__name__}: {exc}", transient=True) from exc


_SENDERS = {AlertChannel.SLACK: _slack_send, AlertChannel.EMAIL: _email_send}


def alert_deliver(*, delivery_id: int, final_attempt: bool = True) -> AlertDelivery | None:
    """Send one delivery and record the attempt; a no-op once it is sent or failed for good.

    A transient failure is recorded and raised as TransientError, so the task retries it;
    on the final attempt the delivery is marked failed first. Other failures (no
    workspace, a revoked token, an unknown channel) are recorded as failed and not raised.
    """
    with transaction.atomic():
        # The row lock makes a redelivered task wait for the first, then see "sent".
        delivery = AlertDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.state in (
            AlertDeliveryState.SENT,
            AlertDeliveryState.FAILED,
        ):
            return delivery
        delivery.attempts += 1
        delivery.last_attempt_at = timezone.now()
        failure: AlertSendError | None = None
        try:
            _SENDERS[AlertChannel(delivery.channel)](delivery=delivery)
        except AlertSendError as exc:
            failure = exc
            delivery.error = str(exc)[:2000]
            retry = exc.transient and not final_attempt
            delivery.state = AlertDeliveryState.RETRYING if retry else AlertDeliveryState.FAILED
        else:
            delivery.state = AlertDeliveryState.SENT
            delivery.sent_at = timezone.now()
        delivery.save(update_fields=["attempts", "last_attempt_at", "error", "state", "sent_at"])
    if failure is not None:
        logger.warning(
            "alert delivery %s (%s to %s), attempt %s: %s",
            delivery.pk,
            delivery.channel,
            delivery.target,
            delivery.attempts,
            failure,
        )
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
