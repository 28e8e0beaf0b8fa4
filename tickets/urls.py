from tickets import views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("tickets", views.TicketViewSet, basename="ticket")
router.register("organizations", views.OrganizationViewSet, basename="organization")

urlpatterns = router.urls
