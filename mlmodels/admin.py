"""Admin pages of the model registry: versions with readable metrics, predictions on tickets."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mlmodels import selectors, services
from mlmodels.models import ModelStatus, ModelVersion, Prediction, Target
from mlmodels.receivers import PREDICTIONS_PREFETCH
from taskops.services import task_enqueue, triggered_by_label
from tickets.admin_scoping import OrganizationScopedAdmin
from tickets.models import Role, Ticket
from tickets.selectors import organization_list_for_user, ticket_labels_known
from tickets.services import LabelUnknownError

REVIEW_PAGE_SIZE = 50

STATUS_COLOURS = {
    ModelStatus.ACTIVE: "#1a7f37",
    ModelStatus.READY: "#0969da",
    ModelStatus.TRAINING: "#9a6700",
    ModelStatus.RETIRED: "#57606a",
    ModelStatus.REJECTED: "#cf222e",
    ModelStatus.FAILED: "#cf222e",
}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _cell_colour(share: float, diagonal: bool) -> str:
    """Green for correct predictions, red for mistakes; the larger the share, the stronger."""
    alpha = 0.08 + 0.8 * max(0.0, min(1.0, share)) if share > 0 else 0.0
    rgb = "26,127,55" if diagonal else "207,34,46"
    return f"rgba({rgb},{alpha:.2f})"


def _natural(label: str) -> tuple[int, int | str]:
    """Numeric labels in numeric order ("4" before "11"), then the rest alphabetically."""
    return (0, int(label)) if label.isdigit() else (1, label)


def confusion_matrix_html(metrics: dict[str, Any]) -> SafeString:
    """The confusion matrix as a table coloured by each cell's share of its true class."""
    confusion = metrics.get("confusion_matrix") or {}
    stored: list[str] = confusion.get("labels") or []
    cells: list[list[int]] = confusion.get("matrix") or []
    if not stored or not cells:
        return format_html("<em>{}</em>", "no confusion matrix recorded")
    order = sorted(range(len(stored)), key=lambda i: _natural(stored[i]))
    labels = [stored[i] for i in order]
    matrix = [[cells[i][j] for j in order] for i in order]
    header = format_html_join(
        "", '<th style="padding:4px 8px;text-align:center">{}</th>', ((label,) for label in labels)
    )
    rows = []
    for i, (label, counts) in enumerate(zip(labels, matrix, strict=False)):
        total = sum(counts)
        cells = format_html_join(
            "",
            '<td title="{} of true {} predicted as {}" '
            'style="padding:4px 8px;text-align:right;background:{}">{}</td>',
            (
                (
                    _percent(count / total if total else 0.0),
                    label,
                    labels[j],
                    _cell_colour(count / total if total else 0.0, i == j),
                    count,
                )
                for j, count in enumerate(counts)
            ),
        )
        rows.append(
            format_html(
                '<tr><th style="padding:4px 8px;text-align:right">{}</th>{}'
                '<td style="padding:4px 8px;text-align:right;color:#57606a">{}</td></tr>',
                label,
                cells,
                total,
            )
        )
    return format_html(
        '<table style="border-collapse:collapse"><thead><tr>'
        '<th style="padding:4px 8px">true \\ predicted</th>{}'
        '<th style="padding:4px 8px;color:#57606a">n</th></tr></thead>'
        "<tbody>{}</tbody></table>",
        header,
        format_html_join("", "{}", ((row,) for row in rows)),
    )


def per_class_html(metrics: dict[str, Any]) -> SafeString:
    """Precision, recall, F1 and support per class."""
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if not per_class:
        return format_html("<em>{}</em>", "no per-class metrics recorded")
    body = format_html_join(
        "",
        '<tr><th style="padding:4px 8px;text-align:right">{}</th>'
        '<td style="padding:4px 8px;text-align:right">{}</td>'
        '<td style="padding:4px 8px;text-align:right">{}</td>'
        '<td style="padding:4px 8px;text-align:right;background:{}">{}</td>'
        '<td style="padding:4px 8px;text-align:right">{}</td></tr>',
        (
            (
                label,
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                _cell_colour(row["f1"], True),
                f"{row['f1']:.3f}",
                row["support"],
            )
            for label, row in sorted(per_class.items(), key=lambda item: _natural(item[0]))
        ),
    )
    return format_html(
        '<table style="border-collapse:collapse"><thead><tr>'
        '<th style="padding:4px 8px">class</th><th style="padding:4px 8px">precision</th>'
        '<th style="padding:4px 8px">recall</th><th style="padding:4px 8px">F1</th>'
        '<th style="padding:4px 8px">support</th></tr></thead><tbody>{}</tbody></table>',
        body,
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "organization",
        "target",
        "version",
        "status_badge",
        "accuracy_display",
        "macro_f1_display",
        "training_set_size",
        "created_at",
        "activated_at",
    ]
    list_filter = ["status", "target", "organization"]
    search_fields = ["organization__slug", "artifact_sha256", "trained_by_task_id"]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]
    actions = ["activate_versions", "roll_back", "train_again"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "organization",
                    "target",
                    "version",
                    "status",
                    "error",
                    "created_at",
                    "trained_at",
                    "activated_at",
                    "activated_by",
                    "triggered_by",
                    "trained_by_task_id",
                ]
            },
        ),
        (
            "Metrics on held-out tickets",
            {
                "fields": [
                    "metrics_summary",
                    "live_accuracy_display",
                    "gate_summary",
                    "selection_table",
                    "confusion_matrix_table",
                    "per_class_table",
                ]
            },
        ),
        (
            "Training data and artifact",
            {
                "fields": [
                    "labels",
                    "label_counts",
                    "training_set_size",
                    "n_train",
                    "n_test",
                    "n_shipped",
                    "params",
                    "library_versions",
                    "artifact",
                    "artifact_sha256",
                    "artifact_size",
                    "training_seconds",
                ]
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        return super().get_queryset(request).defer("test_ticket_ids")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # An audit record: only the actions change it.
        return [str(name) for _, options in self.fieldsets for name in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Predictions name their version: deleting one would erase that history.
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ModelVersion) -> SafeString:
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:8px">{}</span>',
            STATUS_COLOURS.get(ModelStatus(obj.status), "#57606a"),
            obj.get_status_display(),
        )

    @admin.display(description="accuracy")
    def accuracy_display(self, obj: ModelVersion) -> str:
        return _percent(obj.accuracy)

    @admin.display(description="macro-F1")
    def macro_f1_display(self, obj: ModelVersion) -> str:
        return "-" if obj.macro_f1 is None else f"{obj.macro_f1:.3f}"

    @admin.display(description="summary")
    def metrics_summary(self, obj: ModelVersion) -> SafeString:
        m = obj.metrics or {}
        threshold = m.get("threshold_at_95")
        return format_html(
            "accuracy <b>{}</b> · macro-F1 <b>{}</b> · calibration error (ECE) <b>{}</b> · "
            "answered at 95 % precision <b>{}</b> (confidence ≥ {}) · {} held-out tickets",
            _percent(m.get("accuracy")),
            "-" if m.get("macro_f1") is None else f"{m['macro_f1']:.3f}",
            "-" if m.get("ece") is None else f"{m['ece']:.3f}",
            _percent(m.get("coverage_at_95")),
            "-" if threshold is None else f"{threshold:.2f}",
            m.get("n_test", obj.n_test),
        )

    @admin.display(description="live accuracy (reviewed predictions people kept)")
    def live_accuracy_display(self, obj: ModelVersion) -> SafeString:
        live = selectors.model_version_live_accuracy(versions=[obj])[obj.pk]
        if not live["reviewed"]:
            return format_html("<em>{}</em> · offline {}", "no reviews yet", _percent(obj.accuracy))
        return format_html(
            "<b>{}</b> of {} reviewed predictions kept ({} changed) · offline {}",
            _percent(live["live_accuracy"]),
            live["reviewed"],
            live["changed"],
            _percent(obj.accuracy),
        )

    @admin.display(description="model selection (CV on the training split)")
    def selection_table(self, obj: ModelVersion) -> SafeString:
        selection = obj.selection or {}
        candidates = selection.get("candidates") or []
        if not candidates:
            return format_html("<em>{}</em>", "fixed configuration (no selection recorded)")
        chosen = selection.get("chosen") or {}
        rows = format_html_join(
            "",
            # format_html escapes its arguments into strings first: numbers come preformatted.
            "<tr{}><td>{}</td><td>{}</td><td>{} ± {}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    format_html(' style="{}"', "font-weight:bold;background:#ddf4e4")
                    if c["C"] == chosen.get("C")
                    and c["class_weight_power"] == chosen.get("class_weight_power")
                    else "",
                    c["class_weight_power"],
                    c["C"],
                    f"{c['objective_mean']:.3f}",
                    f"{c['objective_std']:.3f}",
                    f"{c['accuracy_mean']:.3f}",
                    f"{c['macro_f1_mean']:.3f}",
                )
                for c in candidates
            ),
        )
        return format_html(
            "<p>{} · {} folds · temperature {} · confidence sigmoid({} * top-two margin + {})</p>"
            "<table><tr><th>class-weight power</th>"
            "<th>C</th><th>objective</th><th>accuracy</th><th>macro-F1</th></tr>{}</table>",
            selection.get("objective", ""),
            selection.get("cv_folds", "-"),
            selection.get("temperature", "-"),
            selection.get("confidence", {}).get("margin_scale", "-"),
            selection.get("confidence", {}).get("margin_shift", "-"),
            rows,
        )

    @admin.display(description="promotion gate")
    def gate_summary(self, obj: ModelVersion) -> SafeString:
        gate = obj.comparison or {}
        if not gate:
            return format_html("<em>{}</em>", "not decided")
        active = gate.get("active_macro_f1")
        return format_html(
            "{} — candidate macro-F1 {}, active (v{}) {}, tolerance {}",
            gate.get("decision", ""),
            "-" if gate.get("candidate_macro_f1") is None else f"{gate['candidate_macro_f1']:.3f}",
            gate.get("active_version", "-"),
            "-" if active is None else f"{active:.3f}",
            gate.get("tolerance"),
        )

    @admin.display(description="confusion matrix (rows: true class; share of the row)")
    def confusion_matrix_table(self, obj: ModelVersion) -> SafeString:
        return confusion_matrix_html(obj.metrics or {})

    @admin.display(description="per class")
    def per_class_table(self, obj: ModelVersion) -> SafeString:
        return per_class_html(obj.metrics or {})

    @admin.action(description="Activate (promote or roll back to) the selected version")
    def activate_versions(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        for version in queryset.select_related("organization"):
            try:
                services.model_activate(
                    version=version, activated_by=triggered_by_label(request.user)
                )
            except services.ModelStateError as exc:
                self.message_user(request, f"{version}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{version.organization.slug}/{version.target} v{version.version} is active",
                )

    @admin.action(description="Roll back to the previously active version")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        pairs = {(v.organization, v.target) for v in queryset.select_related("organization")}
        for organization, target in sorted(pairs, key=lambda pair: (pair[0].slug, pair[1])):
            try:
                version = services.model_rollback(
                    organization=organization,
                    target=target,
                    activated_by=triggered_by_label(request.user),
                )
            except services.ModelStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, f"{organization.slug}/{target} rolled back to v{version.version}"
                )

    @admin.action(description="Train a new version for the selected versions' organizations")
    def train_again(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        targets: dict[int, set[str]] = {}
        for org_id, target in queryset.values_list("organization_id", "target"):
            targets.setdefault(org_id, set()).add(target)
        for org_id, wanted in sorted(targets.items()):
            task_id = task_enqueue(
                name=services.TRAIN_TASK,
                kwargs={"organization_id": org_id, "targets": sorted(wanted)},
                triggered_by=triggered_by_label(request.user),
            )
            self.message_user(
                request, f"training of organization {org_id} queued as task {task_id}"
            )


@admin.register(Prediction)
class PredictionAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = [
        "ticket",
        "target",
        "label",
        "confidence",
        "model_version",
        "applied",
        "created_at",
    ]
    list_filter = ["target", "applied", "model_version__organization"]
    search_fields = ["ticket__subject", "label"]
    date_hierarchy = "created_at"
    list_select_related = ["ticket", "model_version", "model_version__organization"]
    readonly_fields = [
        "ticket",
        "target",
        "model_version",
        "label",
        "confidence",
        "margin",
        "top_terms",
        "applied",
        "created_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        review = path(
            "review/",
            self.admin_site.admin_view(self.review_queue),
            name="mlmodels_prediction_review",
        )
        return [review, *super().get_urls()]

    def review_queue(self, request: HttpRequest) -> HttpResponse:
        """The review queue: one-click accept of the model's label, or choose another."""
        # Staff act in the admin only for organizations they administer (all for superusers).
        organizations = organization_list_for_user(user=request.user, min_role=Role.ADMIN)
        if request.method == "POST":
            return self._review_decide(request, organizations)
        tickets = list(
            selectors.review_queue_for_user(user=request.user)
            .filter(organization__in=organizations)
            .prefetch_related(PREDICTIONS_PREFETCH)[:REVIEW_PAGE_SIZE]
        )
        known: dict[tuple[int, str], list[str]] = {}
        rows = []
        for ticket in tickets:
            latest = selectors.prediction_latest_by_target(ticket=ticket)
            for target in Target.values:
                prediction = latest.get(target)
                if prediction is None:
                    continue
                key = (ticket.organization_id, target)
                if key not in known:
                    known[key] = ticket_labels_known(organization=ticket.organization, field=target)
                rows.append(
                    {
                        "ticket": ticket,
                        "target": target,
                        "prediction": prediction,
                        "labels": known[key],
                    }
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Review queue",
            "rows": rows,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/mlmodels/review_queue.html", context)

    def _review_decide(self, request: HttpRequest, organizations: Any) -> HttpResponse:
        ticket_id = request.POST.get("ticket", "")
        target = request.POST.get("target", "")
        ticket = (
            Ticket.objects.filter(organization__in=organizations, pk=int(ticket_id))
            .select_related("organization")
            .first()
            if ticket_id.isdigit()
            else None
        )
        if ticket is None:
            raise Http404("no such ticket")
        label = request.POST.get("label") or None
        try:
            services.prediction_review(ticket=ticket, target=target, user=request.user, label=label)
        except (LabelUnknownError, services.ReviewError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            ticket.refresh_from_db()
            self.message_user(
                request, f"ticket #{ticket.pk}: {target} is {getattr(ticket, target)} (reviewed)"
            )
        return HttpResponseRedirect(reverse("admin:mlmodels_prediction_review"))


PREDICTION_FIELDS = [
    "target",
    "label",
    "confidence",
    "model_version",
    "applied",
    "top_terms",
    "created_at",
]


class PredictionInline(admin.TabularInline):
    """The models' predictions on the ticket page, newest first."""

    model = Prediction
    extra = 0
    can_delete = False
    readonly_fields = PREDICTION_FIELDS
    fields = tuple(PREDICTION_FIELDS)
    ordering = ["-id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Prediction]:
        return super().get_queryset(request).select_related("model_version")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# The core's ticket page learns about predictions from this side; tickets imports nothing here.
_ticket_admin = admin.site._registry.get(Ticket)
if _ticket_admin is not None and PredictionInline not in _ticket_admin.inlines:
    # The instance attribute shadows the class's list: TicketAdmin itself is not changed.
    _ticket_admin.inlines = [*_ticket_admin.inlines, PredictionInline]  # type: ignore[misc]
