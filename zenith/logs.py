"""Structured logs: structlog in front of the stdlib, rendered as JSON or plain lines.

Every process (web, worker, beat, commands) logs through the root logger's one handler,
whose ``structlog.stdlib.ProcessorFormatter`` renders both structlog events and the
stdlib records of Django, Celery and the other libraries, with the fields bound in
``structlog.contextvars`` merged in: ``request_id`` (django-structlog's request
middleware), ``task_id`` and ``task_name`` (bound per task in the worker, see
zenith/celery.py), ``organization`` and ``ticket_id``. Imported by the settings, so it
imports nothing of Django or Celery.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

LOG_FORMATS = ("json", "plain")

# Slack Bolt's loggers: the library's own, the one Zenith hands its app, and the ones the
# app derives from its name ("zenith:<Class>", integrations/slack_events.py).
SLACK_BOLT_LOGGERS = ("slack_bolt", "integrations.slack.bolt", "zenith:")
_PAYLOAD_START = re.compile(r"[({\[]")


class WithoutSlackBodies(logging.Filter):
    """Keep Slack request payloads (message text, people, form values) out of the logs.

    Bolt prints the request body, or parts of it, into some lines ("Unhandled request
    ({...})") and into its debug output. Its lines below WARNING are dropped; the others
    keep their words up to the first bracket, which is where a payload starts.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(SLACK_BOLT_LOGGERS):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        cut = _PAYLOAD_START.search(message)
        if cut is not None:
            message = f"{message[: cut.start()].rstrip()} (request body withheld)"
        record.msg, record.args = message, ()
        return True


def _shared_processors() -> list[Any]:
    """What structlog events and foreign stdlib records both get before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def structlog_configure() -> None:
    """Route structlog through the stdlib, so LOGGING's handlers and levels apply to both."""
    # Python warnings become `py.warnings` records, rendered like every other line.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def formatter_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config`` formatter entry rendering `log_format` (``json`` or ``plain``)."""
    if log_format == "json":
        renderers: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # plain_traceback: the rich default would print every frame's locals (secrets too).
        renderers = [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        # Records of libraries' stdlib loggers; ExtraAdder keeps their `extra=` fields.
        "foreign_pre_chain": [*_shared_processors(), structlog.stdlib.ExtraAdder()],
    }


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING: one stderr handler on the root logger in the chosen format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {log_format: formatter_config(log_format)},
        "filters": {"without_slack_bodies": {"()": WithoutSlackBodies}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["without_slack_bodies"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        # Django's default handlers would print django.* lines a second time, unformatted.
        "loggers": {
            "django": {"handlers": [], "propagate": True},
            "django.server": {"handlers": [], "propagate": True},
            # billiard (Celery's pool) logs "Process 'ForkPoolWorker-1' ... exited with ..." on
            # this logger, which never propagates: without a handler of its own, Python's
            # last-resort handler would print it as a bare line.
            "multiprocessing": {"handlers": ["console"], "propagate": False},
        },
    }
