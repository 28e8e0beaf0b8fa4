"""factory_boy factories for the integrations' models."""

from __future__ import annotations

import factory

from integrations.models import Mailbox, SlackWorkspace
from tests.tickets.factories import OrganizationFactory


class SlackWorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = SlackWorkspace

    organization = factory.SubFactory(OrganizationFactory)
    team_id = factory.Sequence(lambda n: f"T{n:08d}")
    name = factory.Sequence(lambda n: f"Workspace {n}")


class MailboxFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Mailbox

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Mailbox {n}")
    host = "imap.example.test"
    username = factory.Sequence(lambda n: f"support{n}")
