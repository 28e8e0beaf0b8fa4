"""manage.py evaluate_model: the held-out metrics of an organization's active models."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mlmodels import selectors
from mlmodels.models import ModelVersion, Target
from tickets.models import Organization


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Command(BaseCommand):
    help = (
        "Print the metrics of the active model(s) of an organization, measured on held-out tickets."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organization slug")
        parser.add_argument("--target", choices=Target.values, default=None)
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        targets = [options["target"]] if options["target"] else list(Target.values)
        versions = {
            target: version
            for target in targets
            if (version := selectors.model_version_active(organization=organization, target=target))
        }
        if not versions:
            raise CommandError(
                f"{organization.slug} has no active {' or '.join(targets)} model; run train_models"
            )
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {target: self._as_json(version) for target, version in versions.items()},
                    indent=2,
                )
            )
            return
        for target, version in versions.items():
            self._table(target, version)

    def _as_json(self, version: ModelVersion) -> dict[str, Any]:
        return {
            "model_version_id": version.pk,
            "version": version.version,
            "status": version.status,
            "trained_at": version.trained_at.isoformat() if version.trained_at else None,
            "n_train": version.n_train,
            "n_test": version.n_test,
            "labels": version.labels,
            "artifact_sha256": version.artifact_sha256,
            "metrics": version.metrics,
            "comparison": version.comparison,
        }

    def _table(self, target: str, version: ModelVersion) -> None:
        m = version.metrics
        out = self.stdout
        out.write(
            f"{version.organization.slug} {target} v{version.version} ({version.status}), "
            f"{version.n_train} train / {version.n_test} held-out tickets"
        )
        out.write(f"  accuracy            {_fmt(m.get('accuracy'))}")
        out.write(f"  macro-F1            {_fmt(m.get('macro_f1'))}")
        out.write(f"  ECE (10 bins)       {_fmt(m.get('ece'))}")
        out.write(
            f"  coverage at 95 %    {_fmt(m.get('coverage_at_95'))}"
            f" (confidence >= {_fmt(m.get('threshold_at_95'), 2)})"
        )
        out.write("")
        out.write(f"  {'class':>8} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}")
        for label, row in (m.get("per_class") or {}).items():
            out.write(
                f"  {label:>8} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} "
                f"{row['support']:8d}"
            )
        confusion = m.get("confusion_matrix") or {}
        labels = confusion.get("labels") or []
        if labels:
            width = max(6, *(len(label) + 1 for label in labels))
            out.write("")
            out.write("  confusion (rows true, columns predicted)")
            out.write("  " + " " * width + "".join(f"{label:>{width}}" for label in labels))
            for label, counts in zip(labels, confusion.get("matrix") or [], strict=False):
                out.write(f"  {label:>{width}}" + "".join(f"{count:>{width}d}" for count in counts))
        out.write("")
