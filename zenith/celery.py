"""The Celery application: `celery -A zenith worker` finds `app` here."""

import logging
import os
import time
from typing import Any

import structlog
from celery import Celery, signals
from django_structlog.celery import signals as django_structlog_signals
from django_structlog.celery.steps import DjangoStructLogInitStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")

app = Celery("zenith", task_cls="taskops.base:ZenithTask")
# Every CELERY_* Django setting configures Celery; see zenith/settings.py.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# ------------------------------------------------------------------------------
# Logging: workers and beat log like web does (zenith/logs.py)
# ------------------------------------------------------------------------------
# Task keyword arguments naming what a task works on, bound as these log fields.
TASK_LOG_FIELDS = {"organization_id": "organization", "ticket_id": "ticket_id"}

logger = structlog.get_logger(__name__)


@signals.celeryd_init.connect
@signals.setup_logging.connect
def keep_django_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """Keep Django's LOGGING instead of Celery's handlers; `--loglevel` still applies.

    Any receiver of `setup_logging` stops Celery from replacing the root logger's handlers.
    `celeryd_init` comes earlier, before Django is set up and before the worker's first
    warnings (running as root), which would otherwise be printed unformatted.
    https://docs.celeryq.dev/en/stable/userguide/signals.html#setup-logging
    """
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
    if settings.LOG_FORMAT == "json":
        worker_messages_log()


def _worker_say(msg: str, f: Any = None) -> None:
    """`celery.apps.worker.safe_say`, logged: a record on `celery.apps.worker` instead."""
    logging.getLogger("celery.apps.worker").warning(msg.strip())


def worker_messages_log() -> None:
    """Route what the worker prints outside logging through it (JSON logs only).

    On a signal the worker writes "worker: Warm shutdown (MainProcess)" (and the Ctrl+C
    hints) straight to the stdout file descriptor with `safe_say`, bypassing logging and
    `--quiet`; the module-level function is looked up at call time, so replacing it here
    makes those lines log records like every other. Plain logs keep Celery's own text.
    """
    from celery.apps import worker as worker_app

    worker_app.safe_say = _worker_say


@signals.worker_shutting_down.connect
def log_worker_shutting_down(sender: str, sig: str, how: str, exitcode: int, **kwargs: Any) -> None:
    """One structured line when a worker starts to stop (SIGTERM: warm, SIGQUIT: cold)."""
    logger.info("worker_shutting_down", hostname=sender, signal=sig, how=how, exitcode=exitcode)


@signals.celeryd_after_setup.connect
def log_worker_setup(sender: str, instance: Any, **kwargs: Any) -> None:
    """What the start-up banner says, as one line (the banner is off with JSON logs)."""
    logger.info(
        "worker_starting",
        hostname=sender,
        queues=sorted(instance.app.amqp.queues.consume_from),
        concurrency=instance.concurrency,
    )


@signals.task_postrun.connect
def close_unusable_connections(task: Any = None, **kwargs: Any) -> None:
    """After a task, drop a database connection that failed or outlived CONN_MAX_AGE.

    What Django does at the end of each request; Celery's fixup no longer closes every
    connection after every task (CELERY_DB_REUSE_MAX in settings). No query is made unless
    the connection saw an error.
    """
    from django.db import connections

    if task is None or getattr(task.request, "is_eager", False):
        return  # run in the caller's process (and maybe its transaction): not ours to close
    now = time.monotonic()
    for connection in connections.all(initialized_only=True):
        if connection.connection is None:
            continue
        expired = connection.close_at is not None and now >= connection.close_at
        if expired or connection.errors_occurred or not connection.get_autocommit():
            connection.close_if_unusable_or_obsolete()


def task_log_context_bind(sender: Any = None, task: Any = None, **kwargs: Any) -> None:
    """Bind the running task's name and the ids it works on to its log lines."""
    if task is None:
        return
    fields: dict[str, Any] = {"task_name": task.name}
    task_kwargs = getattr(task.request, "kwargs", None) or {}
    for kwarg, field in TASK_LOG_FIELDS.items():
        if task_kwargs.get(kwarg) is not None:
            fields[field] = task_kwargs[kwarg]
    structlog.contextvars.bind_contextvars(**fields)


def task_log_context_clear(**kwargs: Any) -> None:
    """After a task, the worker's own lines carry none of its fields."""
    structlog.contextvars.clear_contextvars()


class TaskLogContext(DjangoStructLogInitStep):
    """Worker boot step: django-structlog's task receivers, our fields, cleared after each task.

    django-structlog's task_prerun receiver clears the context, binds `task_id` and what the
    publisher sent along in the message (`request_id`, its `task_id` as `parent_task_id`),
    then sends `bind_extra_task_metadata`, where `task_name` and the ids are added. Only
    workers connect these, so a task run eagerly keeps its caller's context.
    https://django-structlog.readthedocs.io/en/latest/celery.html
    """

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        # The publishing side is already connected in every process (settings:
        # DJANGO_STRUCTLOG_CELERY_ENABLED); twice would log each task_enqueued twice.
        signals.before_task_publish.disconnect(self.receiver.receiver_before_task_publish)
        signals.after_task_publish.disconnect(self.receiver.receiver_after_task_publish)
        django_structlog_signals.bind_extra_task_metadata.connect(
            task_log_context_bind, dispatch_uid="zenith.task_log_context_bind"
        )
        signals.task_postrun.connect(
            task_log_context_clear, weak=False, dispatch_uid="zenith.task_log_context_clear"
        )


app.steps["worker"].add(TaskLogContext)
