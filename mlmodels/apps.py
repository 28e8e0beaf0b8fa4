from django.apps import AppConfig


class MLModelsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "mlmodels"
    verbose_name = "ML models"
