from django.apps import AppConfig


class MLModelsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "mlmodels"
    verbose_name = "ML models"

    def ready(self) -> None:
        # The core knows no listener: classification hooks onto it from this side.
        from django.db.models.signals import post_save

        from mlmodels import receivers
        from mlmodels.metrics import LiveAccuracyCollector, ReviewCollector
        from taskops.metrics import collector_register
        from tickets import serializers, signals
        from tickets.models import Organization

        # taskops serves /metrics but cannot import this app: the review load is added here.
        collector_register(ReviewCollector)
        collector_register(LiveAccuracyCollector)
        signals.tickets_created.connect(
            receivers.classify_new_tickets, dispatch_uid="mlmodels.classify_new_tickets"
        )
        post_save.connect(
            receivers.forget_reused_organization_id,
            sender=Organization,
            dispatch_uid="mlmodels.forget_reused_organization_id",
        )
        if receivers.ticket_prediction_fields not in serializers.ticket_output_extensions:
            serializers.ticket_output_extensions.append(receivers.ticket_prediction_fields)
        if receivers.PREDICTIONS_PREFETCH not in serializers.ticket_output_prefetches:
            serializers.ticket_output_prefetches.append(receivers.PREDICTIONS_PREFETCH)
