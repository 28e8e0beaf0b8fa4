from django.urls import URLPattern, URLResolver, re_path

from mlmodels import views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("models", views.ModelVersionViewSet, basename="model-version")
# Under the tickets' URL space; the core's ticket routes accept only numeric ids.
router.register("tickets/review", views.ReviewQueueViewSet, basename="ticket-review")

urlpatterns: list[URLPattern | URLResolver] = [
    re_path(
        r"^tasks/ml/classify-ticket/?$",
        views.ClassifyTicketView.as_view(),
        name="ml-classify-ticket",
    ),
    re_path(
        r"^tasks/ml/batch-classify/?$", views.BatchClassifyView.as_view(), name="ml-batch-classify"
    ),
    re_path(r"^tasks/ml/train-model/?$", views.TrainModelView.as_view(), name="ml-train-model"),
    *router.urls,
]
