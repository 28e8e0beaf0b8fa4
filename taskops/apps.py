from django.apps import AppConfig
from django.conf import settings


class TaskOpsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "taskops"
    verbose_name = "Task operations"

    def ready(self) -> None:
        # Every process that publishes or runs tasks (web, worker, beat, commands) keeps
        # the ledger; only the benchmark's baseline turns it off.
        if settings.ZENITH_TASK_LEDGER:
            from taskops import receivers

            receivers.connect()
