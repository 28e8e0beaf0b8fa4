from django.apps import AppConfig


class TaskOpsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "taskops"
    verbose_name = "Task operations"
