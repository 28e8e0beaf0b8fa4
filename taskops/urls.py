from taskops import views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("schedules", views.ScheduleViewSet, basename="schedule")

urlpatterns = router.urls
