"""factory_boy factories for the integrations' models (Slack and e-mail)."""

from __future__ import annotations

import factory
from django.utils import timezone

from integrations.models import (
    InboundEmail,
    InboundEmailState,
    Mailbox,
    SlackChannel,
    SlackEvent,
    SlackEventStatus,
    SlackUserProfile,
    SlackWorkspace,
)
from tests.tickets.factories import OrganizationFactory


class SlackWorkspaceFactory(factory.django.DjangoModelFactory):
    """An installed workspace; ``bot_token`` is a plain string (the field encrypts it)."""

    class Meta:
        model = SlackWorkspace

    organization = factory.SubFactory(OrganizationFactory)
    team_id = factory.Sequence(lambda n: f"T{n:08d}")
    name = factory.Sequence(lambda n: f"Workspace {n}")


class SlackChannelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SlackChannel

    workspace = factory.SubFactory(SlackWorkspaceFactory)
    channel_id = factory.Sequence(lambda n: f"C{n:08d}")
    name = factory.Sequence(lambda n: f"channel-{n}")


class SlackEventFactory(factory.django.DjangoModelFactory):
    """An Events API delivery as the ledger records it."""

    class Meta:
        model = SlackEvent

    event_id = factory.Sequence(lambda n: f"Ev{n:08d}")
    team_id = factory.Sequence(lambda n: f"T{n:08d}")
    event_type = "message"
    status = SlackEventStatus.PROCESSED


class SlackUserProfileFactory(factory.django.DjangoModelFactory):
    """A cached ``users.info`` answer, fetched now."""

    class Meta:
        model = SlackUserProfile

    team_id = factory.Sequence(lambda n: f"T{n:08d}")
    user_id = factory.Sequence(lambda n: f"U{n:08d}")
    name = factory.Sequence(lambda n: f"user{n}")
    fetched_at = factory.LazyFunction(timezone.now)


class MailboxFactory(factory.django.DjangoModelFactory):
    """An IMAP mailbox; ``password`` is a plain string (the field encrypts it)."""

    class Meta:
        model = Mailbox

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Mailbox {n}")
    host = "imap.example.test"
    username = factory.Sequence(lambda n: f"support{n}")


class InboundEmailFactory(factory.django.DjangoModelFactory):
    """A ledger row for one message of a mailbox (UIDs count up)."""

    class Meta:
        model = InboundEmail

    mailbox = factory.SubFactory(MailboxFactory)
    organization = factory.SelfAttribute("mailbox.organization")
    uidvalidity = 1
    uid = factory.Sequence(lambda n: n + 1)
    message_id = factory.Sequence(lambda n: f"<m{n}@example.com>")
    message_key = factory.SelfAttribute("message_id")
    state = InboundEmailState.TICKET
    subject = factory.Sequence(lambda n: f"mail {n}")
    from_address = "someone@example.com"
