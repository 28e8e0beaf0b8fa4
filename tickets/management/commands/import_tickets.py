"""manage.py import_tickets: labelled tickets from a CSV file, idempotently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tickets import services
from tickets.management.progress import add_progress_argument, command_progress


def _label_spec(value: str) -> tuple[str, str]:
    target, sep, column = value.partition("=")
    if not sep or not target or not column:
        raise ValueError(value)
    return target.strip(), column.strip()


class Command(BaseCommand):
    help = "Import tickets from a CSV file into an organization (created when the slug is new)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument(
            "--text",
            default="title,body",
            help="comma-separated text columns (first is the subject)",
        )
        parser.add_argument(
            "--label",
            action="append",
            default=[],
            type=_label_spec,
            metavar="TARGET=COLUMN",
            help="label column, e.g. category=category or priority=urgency (repeatable)",
        )
        parser.add_argument("--id-column", default=None, help="column holding a stable ticket id")
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        organization, created = services.organization_get_or_create(slug=options["org"])
        if created:
            self.stdout.write(f"created organization {organization.slug}")

        try:
            with command_progress(self, options, f"import {path.name}") as report_progress:
                report = services.tickets_import_csv(
                    organization=organization,
                    path=path,
                    text_columns=[c.strip() for c in options["text"].split(",") if c.strip()],
                    label_columns=dict(options["label"]),
                    id_column=options["id_column"],
                    on_progress=lambda rows: report_progress(rows, 0, "rows read"),
                )
        except services.ImportSpecError as exc:
            raise CommandError(str(exc)) from exc
        for line, reason in report.errors:
            self.stderr.write(f"line {line}: {reason}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.rows} rows: {report.created} imported, "
                f"{report.existing} already present, {len(report.errors)} rejected"
            )
        )
