"""The demo organization that `make run` and `seed_demo` set up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from tickets import services
from tickets.models import Organization, Role

DEMO_ORG_SLUG = "demo"
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "zenith-demo"  # noqa: S105 - a published demo login, documented in README
# The project ships its own copy of the shared dataset: a user's clone has no ../shared.
DEMO_DATASET = (
    Path(__file__).resolve().parent.parent / "zenith" / "data" / "it_tickets_endava_sample.csv"
)


@dataclass
class DemoSeed:
    organization: Organization
    username: str
    password: str
    token: str
    report: services.ImportReport


def demo_seed(*, path: Path = DEMO_DATASET) -> DemoSeed:
    """Create (idempotently) the demo organization, its tickets, a superuser and a token."""
    organization, _ = services.organization_get_or_create(
        slug=DEMO_ORG_SLUG, name="Demo IT helpdesk"
    )
    report = services.tickets_import_csv(
        organization=organization,
        path=path,
        text_columns=["title", "body"],
        label_columns={"category": "category", "priority": "urgency"},
    )
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    services.membership_set(user=user, organization=organization, role=Role.ADMIN)
    token, _ = Token.objects.get_or_create(user=user)
    return DemoSeed(
        organization=organization,
        username=DEMO_USERNAME,
        password=DEMO_PASSWORD,
        token=token.key,
        report=report,
    )
