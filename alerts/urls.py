"""Alert routes under /api/v1/."""

from alerts import views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("alerts/rules", views.AlertRuleViewSet, basename="alert-rule")
router.register("alerts/incidents", views.AlertIncidentViewSet, basename="alert-incident")

urlpatterns = router.urls
