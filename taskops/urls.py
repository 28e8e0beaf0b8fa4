from taskops import alert_api, views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("schedules", views.ScheduleViewSet, basename="schedule")
router.register("alerts/rules", alert_api.AlertRuleViewSet, basename="alert-rule")
router.register("alerts/incidents", alert_api.AlertIncidentViewSet, basename="alert-incident")

urlpatterns = router.urls
