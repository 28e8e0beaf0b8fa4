"""Zenith settings: one module, configured from the environment."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from zenith.logs import LOG_FORMATS, logging_config, structlog_configure

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

# A `.env` file of KEY=value lines at the project root (or the file ZENITH_ENV_FILE names) is
# read when present, for development; a variable set in the real environment always wins.
ENV_FILE = Path(os.environ.get("ZENITH_ENV_FILE") or BASE_DIR / ".env")
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

# ------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------
# Fail closed: DEBUG is off unless asked for, and then every secret below is required.
# `make run` (scripts/run_dev.py), the dev compose file and the tests set DJANGO_DEBUG=1.
DEBUG = env.bool("DJANGO_DEBUG", default=False)


def _required(name: str, dev_default: str) -> str:
    """Return a secret from the environment; outside DEBUG a missing one stops start-up."""
    value = env.str(name, default="")
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(f"{name} must be set when DJANGO_DEBUG is off")


SECRET_KEY = _required("DJANGO_SECRET_KEY", "django-insecure-zenith-development-only")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG is off")
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# Fernet keys for credentials at rest; the first encrypts, all decrypt (rotation).
FIELD_ENCRYPTION_KEYS = [
    key.strip()
    for key in _required("ZENITH_FIELD_KEYS", "FEFBsUTHbMNthMXUMuBqd2-iCF3LXnz75CXgW5XDQR0=").split(
        ","
    )
    if key.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_celery_results",
    "django_structlog",
    # Before the apps: tickets/admin.py makes its login-attempt pages superuser-only.
    "axes",
    "tickets",
    "taskops",
    "mlmodels",
    "integrations",
    "alerts",
]

MIDDLEWARE = [
    # GET /healthz and /readyz, answered before the Host header is validated (zenith/probes.py).
    "zenith.probes.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Every error under /api/ and on /metrics as JSON {"detail": ...} (zenith/api.py).
    "zenith.api.APIErrorMiddleware",
    # A NUL in a query parameter is a 400 naming it (PostgreSQL would refuse the lookup).
    "zenith.api.NulQueryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Binds request_id (and user_id, ip) to every line logged while serving the request.
    "django_structlog.middlewares.RequestMiddleware",
    # Answers a locked-out login (admin, API session login) with 429; keep it last.
    "axes.middleware.AxesMiddleware",
]

# ------------------------------------------------------------------------------
# Logins: locked after repeated failures (django-axes)
# ------------------------------------------------------------------------------
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
# Every password login (admin, /api-auth/login/) goes through authenticate(); the first
# backend refuses one whose IP or username failed ZENITH_LOGIN_FAILURE_LIMIT times within
# the cool-off, even with the right password. API tokens are not passwords and are not
# counted. Off only in tests that log in through Django's test client, which gives
# authenticate() no request (tests/security/test_login_lockout.py turns it on).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("ZENITH_LOGIN_LOCKOUT", default=True)
AXES_FAILURE_LIMIT = env.int("ZENITH_LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("ZENITH_LOGIN_COOLOFF_MINUTES", default=15))
# Either alone locks: one address guessing many usernames, or many addresses guessing one.
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
# No start-up banner in every process's log; failures and lock-outs are still logged.
AXES_VERBOSE = False
# The client address is REMOTE_ADDR unless ZENITH_PROXY_COUNT says how many reverse
# proxies in front of web append to X-Forwarded-For: a header a caller writes is not
# trusted, and behind a proxy without it every client shares the proxy's address.
# The DRF throttles read the same count (NUM_PROXIES below).
ZENITH_PROXY_COUNT = env.int("ZENITH_PROXY_COUNT", default=0)
AXES_IPWARE_PROXY_COUNT = ZENITH_PROXY_COUNT or None
if ZENITH_PROXY_COUNT:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]

ROOT_URLCONF = "zenith.urls"
WSGI_APPLICATION = "zenith.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "zenith" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# In development WhiteNoise serves straight from the apps' static folders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# ------------------------------------------------------------------------------
# Database
# ------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default="sqlite:///zenith.db")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    name = Path(DATABASES["default"]["NAME"])
    if str(name) != ":memory:" and not name.is_absolute():
        DATABASES["default"]["NAME"] = str(BASE_DIR / name)
    # WAL lets web, worker and beat read while one of them writes; IMMEDIATE
    # transactions plus a busy timeout make concurrent writers wait, not fail.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory, so worker processes started by tests share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test_zenith.db")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)

# ------------------------------------------------------------------------------
# Cache (Redis when REDIS_URL is set)
# ------------------------------------------------------------------------------
# REDIS_URL, CELERY_BROKER_URL and CELERY_RESULT_BACKEND may name Redis Sentinel instead of
# one node: sentinel://host:port;sentinel://host:port/DB, with the master's name below and,
# when the sentinels require one, their password (README "High availability").
ZENITH_REDIS_SENTINEL_MASTER = env.str("ZENITH_REDIS_SENTINEL_MASTER", default="")
ZENITH_REDIS_SENTINEL_PASSWORD = env.str("ZENITH_REDIS_SENTINEL_PASSWORD", default="")


def _redis_transport_options(url: str) -> dict[str, object]:
    """kombu/Celery options a sentinel:// URL needs (taskops.redis.celery_transport_options)."""
    if not url.lower().startswith("sentinel://"):
        return {}
    if not ZENITH_REDIS_SENTINEL_MASTER:
        raise ImproperlyConfigured(
            "ZENITH_REDIS_SENTINEL_MASTER must be set when a Redis URL is sentinel://..."
        )
    options: dict[str, object] = {"master_name": ZENITH_REDIS_SENTINEL_MASTER}
    if ZENITH_REDIS_SENTINEL_PASSWORD:
        options["sentinel_kwargs"] = {"password": ZENITH_REDIS_SENTINEL_PASSWORD}
    return options


REDIS_URL = env.str("REDIS_URL", default="")
_redis_transport_options(REDIS_URL)  # a Sentinel URL without its master fails here
CACHES = {
    "default": (
        {"BACKEND": "taskops.redis.ZenithRedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# ------------------------------------------------------------------------------
# Django REST framework and OpenAPI
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies nested deeper than zenith.parsers.MAX_JSON_DEPTH are a 400.
    "DEFAULT_PARSER_CLASSES": [
        "zenith.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # ?page_size= up to 500; ?ordering= refuses unknown fields; ?search= only where it works.
    "DEFAULT_PAGINATION_CLASS": "tickets.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "tickets.api.SearchFilter",
        "tickets.api.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "zenith.api.exception_handler",
    # Rates are read from ZENITH_THROTTLE_RATES on each request (zenith/throttles.py).
    "NUM_PROXIES": ZENITH_PROXY_COUNT or None,
    "DEFAULT_THROTTLE_CLASSES": [
        "zenith.throttles.AnonThrottle",
        "zenith.throttles.UserThrottle",
        "zenith.throttles.ScopedThrottle",
    ],
}
# Requests per caller (user, or address when anonymous): `anon` and `user` everywhere,
# the others on top for the endpoints that ask the workers, the broker or a remote server.
# A caller over a rate gets 429 with Retry-After. ZENITH_THROTTLE=0 turns them all off.
ZENITH_THROTTLE_ENABLED = env.bool("ZENITH_THROTTLE", default=True)
ZENITH_THROTTLE_RATES = {
    "anon": env.str("ZENITH_THROTTLE_ANON", default="60/minute"),
    "user": env.str("ZENITH_THROTTLE_USER", default="1200/minute"),
    "tasks_health": env.str("ZENITH_THROTTLE_HEALTH", default="12/minute"),
    "tasks_active": env.str("ZENITH_THROTTLE_ACTIVE", default="30/minute"),
    "mailbox_test_connection": env.str("ZENITH_THROTTLE_TEST_CONNECTION", default="6/minute"),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Zenith API",
    "DESCRIPTION": "Support tickets from Slack and e-mail, triaged by per-organization models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The sidecar serves Swagger UI from our own static files: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# ------------------------------------------------------------------------------
# Celery
# ------------------------------------------------------------------------------
BROKER_DIR = Path(env.str("ZENITH_BROKER_DIR", default=str(VAR_DIR / "broker")))
if not BROKER_DIR.is_absolute():
    BROKER_DIR = BASE_DIR / BROKER_DIR
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # One shared folder so every local process sees every message; the control
    # folder carries fanout (inspect, revoke) between processes.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    for folder in ("queue", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
else:
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    # Above the hard time limit, so a long task is never redelivered while it still runs.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Lower only in fault tests: it is also how long a dead worker's tasks wait.
        "visibility_timeout": env.int("ZENITH_BROKER_VISIBILITY_TIMEOUT", default=2 * 60 * 60),
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
        # sentinel:// brokers: the master's name (and the sentinels' password).
        **_redis_transport_options(CELERY_BROKER_URL),
    }
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-publish-retry-policy
# Publishing (the API's triggers, beat, tasks that queue tasks) retries a lost broker for
# about this many seconds: long enough for Sentinel to promote a replica (down-after plus
# the election: ~4.5 s measured with down-after-milliseconds 2000, ~7 s with 5000), short
# enough that an API call answers 503 with Retry-After well inside gunicorn's 30 s timeout.
ZENITH_PUBLISH_RETRY_SECONDS = env.float("ZENITH_PUBLISH_RETRY_SECONDS", default=15.0)
# Seconds an API client is told to wait (Retry-After) when the broker refused its task.
ZENITH_BROKER_RETRY_AFTER = env.int("ZENITH_BROKER_RETRY_AFTER", default=30)
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": max(1, int(ZENITH_PUBLISH_RETRY_SECONDS / 0.5)),
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
# Seconds a queued (PENDING) task may be missing from the broker before the outbox sweep
# (taskops.tasks.republish_lost_tasks) publishes it again: a failover can lose the last
# writes the old primary had not yet replicated. README "High availability".
ZENITH_OUTBOX_GRACE_SECONDS = env.int("ZENITH_OUTBOX_GRACE_SECONDS", default=120)
# django-celery-results' table, through a backend that retries while PostgreSQL restarts.
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="taskops.results.ResultBackend")
# A sentinel:// result backend names its master the same way as the broker.
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = _redis_transport_options(CELERY_RESULT_BACKEND)
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-backend-always-retry
# Exponential backoff with jitter from 0.2 s, 10 s at most between tries: about a minute of
# outage is ridden out (with Celery's 10 ms start and 10 tries, a restart could outlast it).
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 15
CELERY_RESULT_BACKEND_BASE_SLEEP_BETWEEN_RETRIES_MS = 200
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = 60 * 60
CELERY_CACHE_BACKEND = "django-cache"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=30 * 60)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=25 * 60)
# STARTED lives in the task ledger (taskops/ledger.py), written as the task starts; a
# second STARTED write into the result table would double the database work of a short task.
CELERY_TASK_TRACK_STARTED = False
# Task events feed Flower's task views only (the ledger is Zenith's record of every task).
# Off by default: each costs the worker a Redis publish per state change. Flower switches a
# running worker's events on by itself (its --enable_events, on by default); set
# ZENITH_TASK_EVENTS=1 to have workers send them from the start.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("ZENITH_TASK_EVENTS", default=False)
CELERY_TASK_SEND_SENT_EVENT = CELERY_WORKER_SEND_TASK_EVENTS
# Celery's Django fixup closes every database connection before and after every task unless
# this is set: a new PostgreSQL connection per task cost more than the task. With it set the
# fixup closes them every this many tasks, and taskops.receivers closes a connection that
# failed or passed CONN_MAX_AGE after each task, as Django does after each request.
# https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
CELERY_DB_REUSE_MAX = env.int("ZENITH_DB_REUSE_MAX", default=1000)
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#broker-connection-retry-on-startup
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
# Late acks are enabled per task (idempotent ones only) in the task decorators.
CELERY_TASK_ACKS_LATE = False
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Priorities inside a queue (Redis: 0 is served first; kombu keeps one list per step of
# 0, 3, 6, 9 and pops them in that order): a new ticket's classification overtakes the
# slices of a bulk re-classification, which overtake training. A worker takes the next
# message only when a slot is free (prefetch 1, late acks), and a batch runs as slices
# that re-queue themselves, so a new ticket waits at most one slice. README: "Priorities".
# https://docs.celeryq.dev/en/stable/userguide/routing.html#redis-message-priorities
ZENITH_PRIORITY_URGENT, ZENITH_PRIORITY_BULK, ZENITH_PRIORITY_TRAINING = 0, 6, 9
# Off only to measure what priorities buy (bench/bench_priority.py): every message FIFO.
if not env.bool("ZENITH_TASK_PRIORITIES", default=True):
    ZENITH_PRIORITY_URGENT = ZENITH_PRIORITY_BULK = ZENITH_PRIORITY_TRAINING = 0
# Tickets one batch slice classifies before it re-queues the rest behind newer work.
ZENITH_BATCH_SLICE_SIZE = env.int("ZENITH_BATCH_SLICE_SIZE", default=1000)
CELERY_TASK_ROUTES = {
    "mlmodels.tasks.classify_ticket_task": {
        "queue": "ml_tasks",
        "priority": ZENITH_PRIORITY_URGENT,
    },
    "mlmodels.tasks.batch_classify_tickets_task": {
        "queue": "ml_tasks",
        "priority": ZENITH_PRIORITY_BULK,
    },
    "mlmodels.tasks.train_*": {"queue": "ml_tasks", "priority": ZENITH_PRIORITY_TRAINING},
    "mlmodels.tasks.*": {"queue": "ml_tasks"},
    "integrations.tasks.*": {"queue": "sync_tasks"},
    "taskops.tasks.*": {"queue": "default"},
}
# DatabaseScheduler that only sends while it holds a lease row, so a second beat started
# by mistake waits instead of sending every schedule twice (taskops/beat.py).
# https://django-celery-beat.readthedocs.io/en/latest/#example-running-periodic-tasks
CELERY_BEAT_SCHEDULER = "taskops.beat:LeaderDatabaseScheduler"
# Seconds a beat holds the lease without renewing it; a standby takes over after that.
ZENITH_BEAT_LEASE_SECONDS = env.int("ZENITH_BEAT_LEASE_SECONDS", default=30)
# health reports beat as down when health_check_tasks (every minute) is older than this.
ZENITH_BEAT_HEARTBEAT_MAX_AGE = env.int("ZENITH_BEAT_HEARTBEAT_MAX_AGE", default=180)
# The task ledger's signal handlers (off only to measure their cost: bench/bench_ledger.py).
ZENITH_TASK_LEDGER = env.bool("ZENITH_TASK_LEDGER", default=True)
# Retry delays for transient errors: attempt n waits RETRY_DELAYS[n - 1] seconds.
ZENITH_RETRY_DELAYS = [
    int(s) for s in env.list("ZENITH_RETRY_DELAYS", default=["60", "120", "180"])
]
# How long a worker keeps retrying a task-ledger write while the database is unreachable
# (it holds that task meanwhile, instead of failing through the queue); then it gives up.
ZENITH_LEDGER_RETRY_SECONDS = env.float("ZENITH_LEDGER_RETRY_SECONDS", default=60.0)
# A task whose worker died under it this many times is failed instead of delivered again
# (acks_late + reject_on_worker_lost would otherwise requeue a crashing task forever).
ZENITH_MAX_REDELIVERIES = env.int("ZENITH_MAX_REDELIVERIES", default=3)
ZENITH_TASK_RETENTION_DAYS = env.int("ZENITH_TASK_RETENTION_DAYS", default=30)
ZENITH_MAX_ATTACHMENT_BYTES = env.int("ZENITH_MAX_ATTACHMENT_BYTES", default=10 * 1024 * 1024)
# Hostile mail (issue 14): a larger message is recorded `too_large` (size and subject) and
# not downloaded; at most this much HTML is converted to text; bodies are cut at this many
# characters with a visible marker; a message whose parsing takes longer is recorded
# `rejected` and the mailbox goes on.
ZENITH_MAX_MESSAGE_BYTES = env.int("ZENITH_MAX_MESSAGE_BYTES", default=25 * 1024 * 1024)
ZENITH_MAX_HTML_BYTES = env.int("ZENITH_MAX_HTML_BYTES", default=2 * 1024 * 1024)
ZENITH_MAX_BODY_CHARS = env.int("ZENITH_MAX_BODY_CHARS", default=100_000)
ZENITH_MAX_PARSE_SECONDS = env.float("ZENITH_MAX_PARSE_SECONDS", default=1.5)
# The original .eml of every ingested message is kept (compressed) this long.
ZENITH_RAW_MAIL_RETENTION_DAYS = env.int("ZENITH_RAW_MAIL_RETENTION_DAYS", default=30)
# The smallest class (labelled tickets) that is trained and can be predicted.
ZENITH_ML_MIN_CLASS_EXAMPLES = max(2, env.int("ZENITH_ML_MIN_CLASS_EXAMPLES", default=3))
# "Model live accuracy" alert rules judge a model version only once people reviewed at
# least this many of its predictions: a handful of corrections is noise, not a drift.
ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS = max(
    1, env.int("ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS", default=20)
)
# Live accuracy counts the reviews of the last this many days: it says how a model does
# now (an alert on drift), and its cost follows recent reviews, not all history.
ZENITH_ML_LIVE_ACCURACY_DAYS = max(1, env.int("ZENITH_ML_LIVE_ACCURACY_DAYS", default=30))

# ------------------------------------------------------------------------------
# Integrations and operations
# ------------------------------------------------------------------------------
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api/")
# conversations.history page size (Slack recommends at most 200).
SLACK_HISTORY_PAGE_SIZE = env.int("SLACK_HISTORY_PAGE_SIZE", default=200)
# Each history pass re-reads this much already-synced history, so threads that got new
# replies recently are seen (Slack lists a thread under its parent's ts only).
SLACK_SYNC_OVERLAP_SECONDS = env.int("SLACK_SYNC_OVERLAP_SECONDS", default=24 * 60 * 60)
# "Add to Slack" (OAuth v2): the app's credentials from its *Basic Information* page; the
# bot scopes asked for (README "Slack"); the authorize page (tests point it at a local
# server); the redirect URL registered with the app (unset: the one registered is used).
# https://api.slack.com/authentication/oauth-v2
SLACK_CLIENT_ID = env.str("SLACK_CLIENT_ID", default="")
SLACK_CLIENT_SECRET = env.str("SLACK_CLIENT_SECRET", default="")
SLACK_SCOPES = env.list(
    "SLACK_SCOPES",
    default=["channels:history", "groups:history", "users:read", "users:read.email", "chat:write"],
)
SLACK_OAUTH_BASE_URL = env.str(
    "SLACK_OAUTH_BASE_URL", default="https://slack.com/oauth/v2/authorize"
)
SLACK_OAUTH_REDIRECT_URI = env.str("SLACK_OAUTH_REDIRECT_URI", default="")
# Rotating tokens (12-hour access tokens) are renewed this long before they expire.
# https://api.slack.com/authentication/rotation
SLACK_TOKEN_REFRESH_MARGIN_SECONDS = env.int("SLACK_TOKEN_REFRESH_MARGIN_SECONDS", default=600)
# IMAP: extra CA bundle for servers with a private CA (unset: the system's trust store).
ZENITH_IMAP_CA_FILE = env.str("ZENITH_IMAP_CA_FILE", default="")
ZENITH_IMAP_TIMEOUT = env.float("ZENITH_IMAP_TIMEOUT", default=30.0)
# Outside DEBUG a mailbox may not use `security: none`, nor a host that resolves to a
# loopback, private, link-local or otherwise internal address (checked on save and again
# at connect time), unless these allow it.
ZENITH_IMAP_ALLOW_PLAINTEXT = env.bool("ZENITH_IMAP_ALLOW_PLAINTEXT", default=False)
ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = env.bool("ZENITH_IMAP_ALLOW_PRIVATE_HOSTS", default=False)
# Seconds the test-connection task gives the server (connect, TLS, login, each command).
ZENITH_IMAP_TEST_TIMEOUT = env.float("ZENITH_IMAP_TEST_TIMEOUT", default=10.0)
# OAuth2 (XOAUTH2) mailboxes: client credentials per provider, never per request.
# https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
ZENITH_OAUTH_MICROSOFT_CLIENT_ID = env.str("ZENITH_OAUTH_MICROSOFT_CLIENT_ID", default="")
ZENITH_OAUTH_MICROSOFT_CLIENT_SECRET = env.str("ZENITH_OAUTH_MICROSOFT_CLIENT_SECRET", default="")
ZENITH_OAUTH_MICROSOFT_TENANT = env.str("ZENITH_OAUTH_MICROSOFT_TENANT", default="common")
ZENITH_OAUTH_GOOGLE_CLIENT_ID = env.str("ZENITH_OAUTH_GOOGLE_CLIENT_ID", default="")
ZENITH_OAUTH_GOOGLE_CLIENT_SECRET = env.str("ZENITH_OAUTH_GOOGLE_CLIENT_SECRET", default="")
# "generic": any OAuth2 provider whose authorize/token URLs and scopes a mailbox names.
ZENITH_OAUTH_GENERIC_CLIENT_ID = env.str("ZENITH_OAUTH_GENERIC_CLIENT_ID", default="")
ZENITH_OAUTH_GENERIC_CLIENT_SECRET = env.str("ZENITH_OAUTH_GENERIC_CLIENT_SECRET", default="")
# Where providers send the admin back; empty: built from the request that started consent.
ZENITH_OAUTH_REDIRECT_URI = env.str("ZENITH_OAUTH_REDIRECT_URI", default="")
ZENITH_OAUTH_TIMEOUT = env.float("ZENITH_OAUTH_TIMEOUT", default=15.0)
# A generic provider's endpoints must be https:// unless this is on (local development).
ZENITH_OAUTH_ALLOW_HTTP = env.bool("ZENITH_OAUTH_ALLOW_HTTP", default=DEBUG)
# Seconds a mailbox poll holds its lease without committing; a crashed poll's lease is
# taken over at once on the same host, elsewhere when it expires.
ZENITH_MAILBOX_LEASE_SECONDS = env.int("ZENITH_MAILBOX_LEASE_SECONDS", default=300)
ZENITH_METRICS_TOKEN = env.str("ZENITH_METRICS_TOKEN", default="")
# Outgoing mail (alert e-mails), e.g. EMAIL_URL=smtp+tls://user:password@smtp.example.com:587;
# the development default prints mail to the worker's console.
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-email-url
vars().update(
    env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="zenith@localhost")
# Seconds before an SMTP connection or command gives up (Django's default waits forever).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
FLOWER_BASIC_AUTH = env.str("FLOWER_BASIC_AUTH", default="")

# ------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------
# structlog renders every line, ours and the libraries' (zenith/logs.py). ZENITH_LOG_FORMAT
# is `json` (one object per line; the default when DEBUG is off) or `plain` (readable; the
# default in DEBUG). Lines carry request_id, task_id, task_name, organization and ticket_id
# where they apply; django-structlog sends the request's fields on to the tasks it enqueues.
# https://django-structlog.readthedocs.io/en/latest/celery.html
LOG_LEVEL = env.str("DJANGO_LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("ZENITH_LOG_FORMAT", default="plain" if DEBUG else "json").strip().lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"ZENITH_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
structlog_configure()
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
DJANGO_STRUCTLOG_CELERY_ENABLED = True
