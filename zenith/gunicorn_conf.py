"""Gunicorn's settings: `gunicorn zenith.wsgi -c python:zenith.gunicorn_conf`.

Gunicorn logs its own lines (boot, workers, signals) on `gunicorn.error` and one line per
request on `gunicorn.access`, with formatters of its own. Here both loggers propagate to the
root logger's one handler, rendered by zenith/logs.py like the application's lines, so with
ZENITH_LOG_FORMAT=json every line the web container prints is one JSON object. Access lines
carry the request's fields (method, path, status, duration_ms, ...) as JSON keys.
Command-line flags (`--bind`, `--workers`) still override what is set here.
https://docs.gunicorn.org/en/stable/settings.html#logconfig-dict
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from gunicorn import glogging

from zenith.logs import LOG_FORMATS, logging_config, structlog_configure


def _env_log_format() -> str:
    """ZENITH_LOG_FORMAT as zenith/settings.py reads it: JSON unless set or in DEBUG."""
    debug = os.environ.get("DJANGO_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    log_format = (os.environ.get("ZENITH_LOG_FORMAT") or ("plain" if debug else "json")).strip()
    return log_format.lower() if log_format.lower() in LOG_FORMATS else "json"


class AccessLogger(glogging.Logger):
    """Gunicorn's logger whose access line is an event with the request's fields."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        query = environ.get("QUERY_STRING", "")
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO", "") + (f"?{query}" if query else ""),
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "request_id": environ.get("HTTP_X_REQUEST_ID"),
        }
        self.access_log.info(
            "http_request", extra={k: v for k, v in fields.items() if v is not None}
        )


structlog_configure()
_config = logging_config(
    log_format=_env_log_format(), level=os.environ.get("DJANGO_LOG_LEVEL", "INFO")
)
# gunicorn.error and gunicorn.access lose the handlers gunicorn gives them and propagate to root.
_config["loggers"].update(
    {
        "gunicorn.error": {"handlers": [], "propagate": True, "level": "INFO"},
        "gunicorn.access": {"handlers": [], "propagate": True, "level": "INFO"},
    }
)
logconfig_dict = _config
logger_class = AccessLogger
# Access lines are logged (logconfig_dict turns them on); no second plain copy on stdout.
accesslog = None
