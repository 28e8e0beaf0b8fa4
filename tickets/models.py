"""The core: organizations, memberships, tickets and their follow-up messages."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Organization(models.Model):
    """A tenant: every ticket, model, mailbox and task belongs to one."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    # Predictions below this confidence flag the ticket for a person's review.
    confidence_threshold = models.FloatField(
        default=0.6, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


# Each role includes the powers of the ones before it.
ROLE_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class Membership(models.Model):
    """A user's role in one organization."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="uniq_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Source(models.TextChoices):
    SLACK = "slack", "Slack"
    EMAIL = "email", "E-mail"
    API = "api", "API"
    IMPORT = "import", "Import"


class Status(models.TextChoices):
    NEW = "new", "New"
    OPEN = "open", "Open"
    PENDING = "pending", "Pending"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


class LabelSource(models.TextChoices):
    PERSON = "person", "Person"
    IMPORT = "import", "Import"
    MODEL = "model", "Model"


class Ticket(models.Model):
    """One support request, from whichever source it came."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="tickets")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    external_id = models.CharField(max_length=255, blank=True, default="")
    subject = models.CharField(max_length=500, blank=True, default="")
    body = models.TextField(blank=True, default="")
    requester = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    category = models.CharField(max_length=100, blank=True, default="")
    category_source = models.CharField(
        max_length=16, choices=LabelSource.choices, blank=True, default=""
    )
    priority = models.CharField(max_length=100, blank=True, default="")
    priority_source = models.CharField(
        max_length=16, choices=LabelSource.choices, blank=True, default=""
    )
    needs_review = models.BooleanField(default=False)
    # How unsure the automatic label that flagged the ticket was (the smallest margin
    # between a model's top two classes): the review queue shows the smallest first.
    review_margin = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The natural key that makes every import and ingestion idempotent.
            models.UniqueConstraint(
                fields=["organization", "source", "external_id"],
                condition=~models.Q(external_id=""),
                name="uniq_ticket_external_id",
            )
        ]
        # The list is newest first per organization, whole or filtered: each index matches
        # a WHERE and the ORDER BY, so a first page reads one page of entries at any size.
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="ticket_org_created"),
            models.Index(
                fields=["organization", "status", "-created_at", "-id"],
                name="ticket_org_status_created",
            ),
            models.Index(
                fields=["organization", "category", "-created_at", "-id"],
                name="ticket_org_category_created",
            ),
            models.Index(fields=["organization", "needs_review"]),
            # The review queue, most uncertain first: only the flagged tickets are in it.
            models.Index(
                fields=["organization", "review_margin", "id"],
                name="ticket_review_queue",
                condition=models.Q(needs_review=True),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject[:60]}"

    @property
    def text(self) -> str:
        """The text a model reads: subject and body."""
        return f"{self.subject} {self.body}".strip()


class TicketMessage(models.Model):
    """A follow-up on a ticket: a thread reply in Slack or a reply e-mail."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages")
    source = models.CharField(max_length=16, choices=Source.choices)
    external_id = models.CharField(max_length=255, blank=True, default="")
    author = models.CharField(max_length=255, blank=True, default="")
    body = models.TextField(blank=True, default="")
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ticket", "source", "external_id"],
                condition=~models.Q(external_id=""),
                name="uniq_ticket_message_external_id",
            )
        ]

    def __str__(self) -> str:
        return f"Message on {self.ticket_id} by {self.author}"


class LabelChange(models.Model):
    """A person's correction of a ticket's label: the feedback the next training uses."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="label_changes")
    field = models.CharField(max_length=16)
    previous_value = models.CharField(max_length=100, blank=True, default="")
    new_value = models.CharField(max_length=100)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at"]
        indexes = [
            # Live accuracy reads people's recent changes (mlmodels.selectors).
            models.Index(
                fields=["changed_at"],
                name="labelchange_person_time",
                condition=models.Q(changed_by__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.field}: {self.previous_value!r} -> {self.new_value!r}"
