"""Writes of the core: organizations, tickets, label corrections and CSV imports."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from django.db import IntegrityError, transaction

from tickets.models import (
    LabelChange,
    LabelSource,
    Membership,
    Organization,
    Role,
    Source,
    Ticket,
    TicketMessage,
)
from tickets.selectors import ticket_labels_known
from tickets.signals import tickets_created

logger = structlog.get_logger(__name__)

LABEL_FIELDS = ("category", "priority")
IMPORT_BATCH_SIZE = 500
KNOWN_LABELS_SHOWN = 50


class LabelUnknownError(ValueError):
    """A label the organization has never used, set without `allow_new_label`."""

    def __init__(self, *, field: str, label: str, known: list[str]) -> None:
        shown = ", ".join(known[:KNOWN_LABELS_SHOWN]) or "none yet"
        more = (
            f" (and {len(known) - KNOWN_LABELS_SHOWN} more)"
            if len(known) > KNOWN_LABELS_SHOWN
            else ""
        )
        super().__init__(
            f"{label!r} is not a {field} this organization uses; known: {shown}{more}. "
            "Send allow_new_label: true to add it."
        )
        self.field = field
        self.known = known


def _labels_check(*, ticket: Ticket, data: Mapping[str, Any]) -> None:
    """Refuse a label nobody in the organization has used: a typo would become a class."""
    for name in LABEL_FIELDS:
        value = data.get(name)
        if value is None or value == getattr(ticket, name):
            continue
        known = ticket_labels_known(organization=ticket.organization, field=name)
        if value not in known:
            raise LabelUnknownError(field=name, label=value, known=known)


def organization_get_or_create(*, slug: str, name: str = "") -> tuple[Organization, bool]:
    """The organization with this slug, created (named after the slug) when new."""
    return Organization.objects.get_or_create(
        slug=slug, defaults={"name": name or slug.replace("-", " ").title()}
    )


def membership_set(*, user: Any, organization: Organization, role: Role) -> Membership:
    """Give the user `role` in the organization (creating the membership when new)."""
    membership, _ = Membership.objects.update_or_create(
        user=user, organization=organization, defaults={"role": role}
    )
    return membership


def _announce(*, organization: Organization, ticket_ids: list[int], source: str) -> None:
    """Tell listeners (classification) about new tickets once their rows are committed."""
    if not ticket_ids:
        return

    def announce() -> None:
        if source == Source.IMPORT:
            logger.info(
                "tickets_created",
                organization=organization.pk,
                source=source,
                count=len(ticket_ids),
            )
        elif len(ticket_ids) > 1:
            # A batch (a Slack history page): one line naming every ticket, not one each.
            logger.info(
                "tickets_created",
                organization=organization.pk,
                source=source,
                count=len(ticket_ids),
                ticket_ids=ticket_ids,
            )
        else:
            logger.info(
                "ticket_created",
                organization=organization.pk,
                source=source,
                ticket_id=ticket_ids[0],
            )
        tickets_created.send(
            sender=Ticket, organization_id=organization.pk, ticket_ids=ticket_ids, source=source
        )

    transaction.on_commit(announce)


def ticket_create(
    *,
    organization: Organization,
    source: str = Source.API,
    external_id: str = "",
    subject: str = "",
    body: str = "",
    requester: str = "",
    category: str = "",
    priority: str = "",
    label_source: str = LabelSource.PERSON,
    if_exists: Literal["return", "raise"] = "return",
) -> tuple[Ticket, bool]:
    """Create a ticket, or return the existing one with the same external id (idempotent).

    ``if_exists="raise"`` skips the look-up: a taken external id raises IntegrityError,
    which breaks the caller's transaction (for callers that then retry with "return").
    """
    labels: dict[str, str] = {}
    for name, value in (("category", category), ("priority", priority)):
        if value:
            labels[name] = value
            labels[f"{name}_source"] = label_source
    values = {"subject": subject, "body": body, "requester": requester, **labels}
    if external_id and if_exists == "return":
        # get_or_create reads again when a concurrent writer inserted the same key first.
        ticket, created = Ticket.objects.get_or_create(
            organization=organization, source=source, external_id=external_id, defaults=values
        )
    else:
        ticket = Ticket.objects.create(
            organization=organization, source=source, external_id=external_id, **values
        )
        created = True
    if created:
        _announce(organization=organization, ticket_ids=[ticket.pk], source=source)
    return ticket, created


def ticket_create_many(
    *, organization: Organization, source: str, tickets: Iterable[Mapping[str, str]]
) -> dict[str, tuple[Ticket, bool]]:
    """Create many unlabelled tickets keyed by external id at once; existing ones are kept.

    Each item has `external_id` and optionally `subject`, `body`, `requester`. Returns
    external id -> (ticket, created); new tickets are announced once, after commit.
    """
    items = {item["external_id"]: item for item in tickets if item.get("external_id")}
    if not items:
        return {}
    fields = ("subject", "body", "requester")
    with transaction.atomic():
        found = Ticket.objects.filter(
            organization=organization, source=source, external_id__in=list(items)
        )
        result = {ticket.external_id: (ticket, False) for ticket in found}
        fresh = [
            Ticket(
                organization=organization,
                source=source,
                external_id=key,
                **{name: item.get(name, "") for name in fields},
            )
            for key, item in items.items()
            if key not in result
        ]
        try:
            with transaction.atomic():
                Ticket.objects.bulk_create(fresh)
        except IntegrityError:
            # A concurrent writer took some keys: fall back to the one-by-one path.
            for ticket in fresh:
                values = {name: getattr(ticket, name) for name in fields}
                result[ticket.external_id] = ticket_create(
                    organization=organization,
                    source=source,
                    external_id=ticket.external_id,
                    **values,
                )
            return result
        if fresh and fresh[0].pk is None:
            # Backends that do not return ids from bulk inserts: read them back.
            ids = dict(
                Ticket.objects.filter(
                    organization=organization,
                    source=source,
                    external_id__in=[t.external_id for t in fresh],
                ).values_list("external_id", "id")
            )
            for ticket in fresh:
                ticket.pk = ids[ticket.external_id]
        result.update({ticket.external_id: (ticket, True) for ticket in fresh})
        _announce(organization=organization, ticket_ids=[t.pk for t in fresh], source=source)
    return result


def ticket_update(
    *, ticket: Ticket, data: Mapping[str, Any], user: Any, allow_new_label: bool = False
) -> Ticket:
    """Apply a person's edit; a changed category or priority is recorded as a training label.

    A label the organization has never used raises LabelUnknownError unless `allow_new_label`.
    """
    if not allow_new_label:
        _labels_check(ticket=ticket, data=data)
    with transaction.atomic():
        ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
        changed: list[str] = []
        for name, value in data.items():
            previous = getattr(ticket, name)
            if name in LABEL_FIELDS:
                if value == previous and getattr(ticket, f"{name}_source") == LabelSource.PERSON:
                    continue
                LabelChange.objects.create(
                    ticket=ticket,
                    field=name,
                    previous_value=previous,
                    new_value=value,
                    changed_by=user if user and user.is_authenticated else None,
                )
                setattr(ticket, f"{name}_source", LabelSource.PERSON)
                changed.append(f"{name}_source")
            elif value == previous:
                continue
            setattr(ticket, name, value)
            changed.append(name)
        if any(name in LABEL_FIELDS for name in data):
            # A person has looked at the labels: nothing is left to review.
            ticket.needs_review = False
            changed.append("needs_review")
        if changed:
            ticket.save(update_fields=[*set(changed), "updated_at"])
    return ticket


def ticket_message_create(
    *,
    ticket: Ticket,
    source: str,
    external_id: str = "",
    author: str = "",
    body: str = "",
    if_exists: Literal["return", "raise"] = "return",
) -> tuple[TicketMessage, bool]:
    """Add a follow-up to a ticket, once per external id (``if_exists`` as in ticket_create)."""
    if not external_id or if_exists == "raise":
        message = TicketMessage.objects.create(
            ticket=ticket, source=source, external_id=external_id, author=author, body=body
        )
        created = True
    else:
        with transaction.atomic():
            message, created = TicketMessage.objects.get_or_create(
                ticket=ticket,
                source=source,
                external_id=external_id,
                defaults={"author": author, "body": body},
            )
    if created:
        transaction.on_commit(
            lambda: logger.info(
                "ticket_message_created",
                organization=ticket.organization_id,
                source=source,
                ticket_id=ticket.pk,
                message_id=message.pk,
            )
        )
    return message, created


# ------------------------------------------------------------------------------
# CSV import
# ------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: counts and the rows it could not use, by line number."""

    rows: int = 0
    created: int = 0
    existing: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


class ImportSpecError(ValueError):
    """The import's options do not match the file (e.g. an unknown column)."""


def _has_undecodable(values: Iterable[str]) -> bool:
    # Undecodable bytes survive as lone surrogates under errors="surrogateescape".
    return any("\udc80" <= ch <= "\udcff" for value in values for ch in value)


def _row_key(texts: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:40]


def tickets_import_csv(
    *,
    organization: Organization,
    path: Path,
    text_columns: list[str],
    label_columns: Mapping[str, str],
    id_column: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import labelled tickets from a CSV file; re-running it imports nothing twice."""
    unknown_targets = set(label_columns) - set(LABEL_FIELDS)
    if unknown_targets:
        raise ImportSpecError(f"unknown label target(s): {', '.join(sorted(unknown_targets))}")
    report = ImportReport()
    pending: list[Ticket] = []
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ImportSpecError(f"{path} is empty")
        header = [name.strip().lstrip("\ufeff") for name in header]
        wanted = [*text_columns, *label_columns.values(), *([id_column] if id_column else [])]
        missing = [name for name in wanted if name not in header]
        if missing:
            raise ImportSpecError(f"column(s) not in the file: {', '.join(missing)}")
        index = {name: header.index(name) for name in header}
        line = reader.line_num
        for row in reader:
            start_line, line = line + 1, reader.line_num
            report.rows += 1
            if on_progress:
                on_progress(report.rows)
            if len(row) != len(header):
                report.errors.append(
                    (start_line, f"expected {len(header)} columns, found {len(row)}")
                )
                continue
            if _has_undecodable(row):
                report.errors.append((start_line, "not valid UTF-8"))
                continue
            texts = [row[index[name]].strip() for name in text_columns]
            if not any(texts):
                report.errors.append((start_line, f"empty text in {', '.join(text_columns)}"))
                continue
            external_id = row[index[id_column]].strip() if id_column else _row_key(texts)
            if not external_id:
                report.errors.append((start_line, f"empty id in {id_column}"))
                continue
            subject, body = (texts[0], " ".join(texts[1:])) if len(texts) > 1 else ("", texts[0])
            ticket = Ticket(
                organization=organization,
                source=Source.IMPORT,
                external_id=external_id[:255],
                subject=subject[:500],
                body=body,
            )
            for target, column in label_columns.items():
                value = row[index[column]].strip()
                if value:
                    setattr(ticket, target, value[:100])
                    setattr(ticket, f"{target}_source", LabelSource.IMPORT)
            pending.append(ticket)
            if len(pending) >= IMPORT_BATCH_SIZE:
                _import_batch(organization=organization, tickets=pending, report=report)
                pending = []
    _import_batch(organization=organization, tickets=pending, report=report)
    return report


def _import_batch(
    *, organization: Organization, tickets: list[Ticket], report: ImportReport
) -> None:
    if not tickets:
        return
    keys = [ticket.external_id for ticket in tickets]
    with transaction.atomic():
        existing = set(
            Ticket.objects.filter(
                organization=organization, source=Source.IMPORT, external_id__in=keys
            ).values_list("external_id", flat=True)
        )
        seen: set[str] = set()
        fresh = []
        for ticket in tickets:
            if ticket.external_id in existing or ticket.external_id in seen:
                report.existing += 1
                continue
            seen.add(ticket.external_id)
            fresh.append(ticket)
        # ignore_conflicts keeps a concurrent import of the same file harmless.
        Ticket.objects.bulk_create(fresh, ignore_conflicts=True)
        report.created += len(fresh)
        created_ids = list(
            Ticket.objects.filter(
                organization=organization, source=Source.IMPORT, external_id__in=list(seen)
            ).values_list("id", flat=True)
        )
        _announce(organization=organization, ticket_ids=created_ids, source=Source.IMPORT)


def labels_rewrite(
    *, organization: Organization, field: str, old: str, new: str, merge: bool
) -> int:
    """Rename label `old` to `new` (or merge `old` into the existing `new`) on every ticket.

    Each rewritten ticket gets a LabelChange (no person), which moves the label watermark:
    the next scheduled training sees new labels. Returns the number of tickets rewritten.
    """
    if field not in LABEL_FIELDS:
        raise ValueError(
            f"unknown label field {field!r}; expected one of {', '.join(LABEL_FIELDS)}"
        )
    if old == new or not new.strip():
        raise ValueError("the new label must be non-empty and differ from the old one")
    known = ticket_labels_known(organization=organization, field=field)
    if old not in known:
        raise ValueError(
            f"{old!r} is not a {field} of {organization.slug}; known: {', '.join(known)}"
        )
    if merge and new not in known:
        raise ValueError(f"{new!r} is not a {field} of {organization.slug}: use rename")
    if not merge and new in known:
        raise ValueError(f"{new!r} is already a {field} of {organization.slug}: use merge")
    with transaction.atomic():
        tickets = Ticket.objects.select_for_update().filter(
            organization=organization, **{field: old}
        )
        ids = list(tickets.values_list("id", flat=True))
        LabelChange.objects.bulk_create(
            [
                LabelChange(ticket_id=pk, field=field, previous_value=old, new_value=new)
                for pk in ids
            ],
            batch_size=1000,
        )
        Ticket.objects.filter(pk__in=ids).update(**{field: new})
    logger.info(
        "labels_rewritten",
        organization=organization.pk,
        field=field,
        old=old,
        new=new,
        merge=merge,
        tickets=len(ids),
    )
    return len(ids)
