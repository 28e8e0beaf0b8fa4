"""manage.py evaluate_model: the held-out metrics of an organization's active models."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mlmodels import selectors, services
from mlmodels.models import ModelVersion, Target
from tickets.models import Organization

# Classes with fewer held-out tickets than this show their cross-validation figures ("cv").
CV_SUPPORT = 5


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
        parser.add_argument(
            "--repeats",
            type=int,
            default=0,
            help="train and measure on N stratified splits (seeds 0..N-1) and report mean and "
            "spread; nothing is stored",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        targets = [options["target"]] if options["target"] else list(Target.values)
        if options["repeats"]:
            self._repeats(organization, targets, options["repeats"], as_json=options["json"])
            return
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

    def _repeats(
        self, organization: Organization, targets: list[str], repeats: int, *, as_json: bool
    ) -> None:
        if repeats < 1:
            raise CommandError("--repeats must be at least 1")
        reports = {}
        for target in targets:
            try:
                reports[target] = services.model_evaluate_repeated(
                    organization=organization, target=target, repeats=repeats
                )
            except ValueError as exc:
                reports[target] = {"target": target, "error": str(exc)}
        if as_json:
            self.stdout.write(json.dumps(reports, indent=2))
            return
        for target, report in reports.items():
            if "error" in report:
                self.stdout.write(f"{organization.slug} {target}: {report['error']}")
                continue
            self.stdout.write(
                f"{organization.slug} {target}: {repeats} stratified splits (seeds 0-{repeats - 1})"
            )
            for name in services.REPEATED_METRICS:
                row = report[name]
                self.stdout.write(
                    f"  {name:<16} mean {row['mean']:.3f}  spread (std) {row['std']:.3f}  "
                    f"min {row['min']:.3f}"
                )
            for run in report["runs"]:
                chosen = run["chosen"]
                self.stdout.write(
                    f"  seed {run['seed']}: accuracy {run['accuracy']:.3f}, macro-F1 "
                    f"{run['macro_f1']:.3f}; chose class-weight power "
                    f"{chosen['class_weight_power']}, C {chosen['C']}"
                )

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
            "n_shipped": version.n_shipped,
            "metrics": version.metrics,
            "selection": version.selection,
            "comparison": version.comparison,
        }

    def _selection(self, version: ModelVersion) -> None:
        selection = version.selection or {}
        if not selection.get("candidates"):
            return
        out = self.stdout
        chosen = selection["chosen"]
        out.write(
            f"  model selection     {selection['objective']}, {selection['cv_folds']} folds; "
            f"chose class-weight power {chosen['class_weight_power']}, C {chosen['C']} "
            f"(temperature {selection.get('temperature')}; confidence "
            f"{selection.get('confidence', {}).get('margin_scale', '-')} x top-two margin + "
            f"{selection.get('confidence', {}).get('margin_shift', '-')}, through a sigmoid)"
        )
        out.write(f"    {'power':>5} {'C':>5} {'objective':>16} {'accuracy':>9} {'macro-F1':>9}")
        for c in selection["candidates"]:
            mark = (
                " *"
                if (c["class_weight_power"], c["C"])
                == (
                    chosen["class_weight_power"],
                    chosen["C"],
                )
                else ""
            )
            out.write(
                f"    {c['class_weight_power']:>5} {c['C']:>5} "
                f"{c['objective_mean']:>8.3f} ± {c['objective_std']:.3f} "
                f"{c['accuracy_mean']:>9.3f} {c['macro_f1_mean']:>9.3f}{mark}"
            )

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
        out.write(f"  shipped model       fitted on {version.n_shipped or version.n_train} tickets")
        self._selection(version)
        out.write("")
        out.write(f"  {'class':>8} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}")
        cv = (m.get("cv") or {}).get("per_class") or {}
        for label, row in (m.get("per_class") or {}).items():
            # Classes too small for the hold-out are measured by cross-validation.
            source, row = (
                ("cv", cv[label]) if row["support"] < CV_SUPPORT and label in cv else ("", row)
            )
            out.write(
                f"  {label:>8} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} "
                f"{row['support']:8d} {source}"
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
