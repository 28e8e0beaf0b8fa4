"""manage.py train_models: train organizations' models (foreground with progress, or --async)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from mlmodels import selectors, services
from mlmodels.management.commands._common import organizations_for
from mlmodels.models import Target
from taskops.services import task_enqueue
from tickets.management.progress import add_progress_argument, command_progress


class Command(BaseCommand):
    help = (
        "Train new category and priority model versions where labels changed since the last "
        "training (all with --force); each is promoted only if it is at least as good as the "
        "active one on held-out tickets."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default=None, help="organization slug (default: all)")
        parser.add_argument(
            "--target", action="append", choices=Target.values, help="train only this target"
        )
        parser.add_argument(
            "--async", dest="run_async", action="store_true", help="enqueue and print the task id"
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="train even when no label changed since the last run",
        )
        parser.add_argument(
            "--classify-after",
            action="store_true",
            help="with --async: classify the unclassified tickets once training is done",
        )
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        targets = options["target"] or list(Target.values)
        only_changed = not options["force"]
        for organization in organizations_for(options["org"]):
            if options["run_async"]:
                task_id = task_enqueue(
                    name=services.TRAIN_TASK,
                    kwargs={
                        "organization_id": organization.pk,
                        "targets": targets,
                        "only_changed": only_changed,
                        "classify_after": options["classify_after"],
                    },
                    triggered_by="command:train_models",
                )
                self.stdout.write(f"{organization.slug}: training queued as task {task_id}")
                continue
            self.stdout.write(f"{organization.slug}:")
            with command_progress(self, options, "train") as progress:
                outcomes = services.organization_models_train(
                    organization=organization,
                    targets=targets,
                    only_changed=only_changed,
                    triggered_by="command:train_models",
                    on_progress=progress,
                )
            trained = {outcome.target for outcome in outcomes}
            for target in targets:
                if target in trained:
                    continue
                if selectors.label_watermark(organization=organization, target=target)["count"]:
                    self.stdout.write(
                        f"  {target}: no new labels since the last training (--force retrains)"
                    )
                else:
                    self.stdout.write(f"  {target}: no labelled tickets yet")
            for outcome in outcomes:
                self.stdout.write(self._describe(outcome))

    def _describe(self, outcome: services.TrainOutcome) -> str:
        if outcome.version is None:
            return self.style.WARNING(f"  {outcome.target}: {outcome.reason}")
        version = outcome.version
        line = (
            f"  {outcome.target}: v{version.version} {version.status} — accuracy "
            f"{version.accuracy:.3f}, macro-F1 {version.macro_f1:.3f}, ECE "
            f"{version.metrics.get('ece', 0):.3f}, {version.n_train} train / {version.n_test} test"
        )
        decision = version.comparison.get("decision")
        if decision:
            line += f"\n    gate: {decision}"
            if version.comparison.get("active_macro_f1") is not None:
                gate = version.comparison
                line += (
                    f" (candidate {gate['candidate_macro_f1']:.3f} vs active "
                    f"v{gate['active_version']} {gate['active_macro_f1']:.3f})"
                )
        style = self.style.SUCCESS if version.status == "active" else self.style.WARNING
        return style(line)
