from django.apps import AppConfig


class AlertsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from alerts.channels import channel_register, email, slack
        from alerts.models import AlertChannel

        channel_register(name=AlertChannel.SLACK, send=slack.send)
        channel_register(name=AlertChannel.EMAIL, send=email.send)
