"""manage.py labels: rename a label or merge one into another, on every ticket of an organization.

    manage.py labels --org SLUG [--field category] rename OLD NEW
    manage.py labels --org SLUG [--field priority] merge A B      (A's tickets become B)

Each rewritten ticket gets a LabelChange, so the next scheduled training sees new labels.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tickets import services
from tickets.models import Organization


class Command(BaseCommand):
    help = "Rename a label, or merge one label into another, on an organization's tickets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--field", choices=services.LABEL_FIELDS, default="category")
        parser.add_argument("operation", choices=["rename", "merge"])
        parser.add_argument("old", help="the label to rewrite (rename: OLD; merge: A)")
        parser.add_argument("new", help="its replacement (rename: a new NEW; merge: existing B)")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        try:
            count = services.labels_rewrite(
                organization=organization,
                field=options["field"],
                old=options["old"],
                new=options["new"],
                merge=options["operation"] == "merge",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        verb = "merged into" if options["operation"] == "merge" else "renamed to"
        self.stdout.write(
            f"{organization.slug} {options['field']}: {options['old']!r} {verb} "
            f"{options['new']!r} on {count} tickets; the next training will use the new labels"
        )
