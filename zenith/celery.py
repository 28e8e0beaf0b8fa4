"""The Celery application: `celery -A zenith worker` finds `app` here."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")

app = Celery("zenith", task_cls="taskops.base:ZenithTask")
# Every CELERY_* Django setting configures Celery; see zenith/settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
