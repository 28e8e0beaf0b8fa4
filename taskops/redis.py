"""Every Redis client Zenith makes itself, for `redis://` and Redis Sentinel URLs alike.

A Sentinel URL lists the sentinels and ends with the database number, the form kombu and
Celery take for their own connections (https://docs.celeryq.dev/en/stable/getting-started/
backends-and-brokers/redis.html#configuration):

    sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3:26379/1

The master's name comes from ZENITH_REDIS_SENTINEL_MASTER; a password in the URL
(`sentinel://:secret@host:port`) is the Redis nodes' password, ZENITH_REDIS_SENTINEL_PASSWORD
the sentinels' own (`requirepass` in sentinel.conf). A client made here asks the sentinels
for the primary whenever it (re)connects, so after a failover it follows the new primary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.core.exceptions import ImproperlyConfigured
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
# Seconds a client waits for a connection or an answer before it tries again: on loopback
# or a LAN a live node answers in milliseconds, and a dead one must not hang a request.
SOCKET_TIMEOUT = 5.0


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are and which master and database they serve."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None
    username: str | None
    sentinel_password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def sentinel_master_name() -> str:
    """ZENITH_REDIS_SENTINEL_MASTER; a Sentinel URL without it is a start-up error."""
    name = getattr(settings, "ZENITH_REDIS_SENTINEL_MASTER", "")
    if not name:
        raise ImproperlyConfigured(
            "ZENITH_REDIS_SENTINEL_MASTER must be set when a Redis URL is sentinel://..."
        )
    return name


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The sentinels, database and passwords of `sentinel://h:p;sentinel://h:p/DB`."""
    sentinels: list[tuple[str, int]] = []
    db, password, username = 0, None, None
    for part in (p.strip() for p in re.split(r"[;,]", url) if p.strip()):
        parsed = urlsplit(part)
        if parsed.scheme.lower() != SENTINEL_SCHEME or not parsed.hostname:
            raise ImproperlyConfigured(f"not a sentinel://host:port URL: {part!r}")
        sentinels.append((parsed.hostname, parsed.port or DEFAULT_SENTINEL_PORT))
        path = parsed.path.strip("/")
        if path:
            if not path.isdigit():
                raise ImproperlyConfigured(f"the database of {part!r} must be a number")
            db = int(path)
        if parsed.password:
            password = unquote(parsed.password)
            username = unquote(parsed.username) if parsed.username else None
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master=sentinel_master_name(),
        db=db,
        password=password,
        username=username,
        sentinel_password=getattr(settings, "ZENITH_REDIS_SENTINEL_PASSWORD", "") or None,
    )


def _sentinel(target: SentinelTarget, **options: Any) -> Sentinel:
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": options.get("socket_timeout", SOCKET_TIMEOUT),
        "socket_connect_timeout": options.get("socket_connect_timeout", SOCKET_TIMEOUT),
    }
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs, **options)


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at `url` (of its current primary, for a Sentinel URL)."""
    options.setdefault("socket_timeout", SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    if target.password:
        options.setdefault("password", target.password)
        options.setdefault("username", target.username)
    return _sentinel(target, **options).master_for(target.master, db=target.db)


def celery_transport_options(url: str) -> dict[str, Any]:
    """What kombu/Celery need beside a URL: for Sentinel, the master name and sentinel auth.

    Used for broker_transport_options and result_backend_transport_options.
    """
    if not is_sentinel_url(url):
        return {}
    options: dict[str, Any] = {"master_name": sentinel_master_name()}
    password = getattr(settings, "ZENITH_REDIS_SENTINEL_PASSWORD", "")
    if password:
        options["sentinel_kwargs"] = {"password": password}
    return options


def _address(host: Any, port: Any) -> str:
    return f"{host}:{port}"


def redis_topology(url: str) -> dict[str, Any]:
    """Which node is primary, its replicas and how far behind they are (INFO replication).

    Raises redis.RedisError when the primary cannot be reached.
    """
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        sentinel = _sentinel(target)
        host, port = sentinel.discover_master(target.master)
        node_options: dict[str, Any] = {
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
        }
        if target.password:
            node_options.update(password=target.password, username=target.username)
        client = redis.Redis(host=host, port=port, **node_options)
        mode, primary = "sentinel", _address(host, port)
    else:
        client = redis_client(url)
        kwargs = client.connection_pool.connection_kwargs
        mode = "standalone"
        primary = kwargs.get("path") or _address(kwargs.get("host"), kwargs.get("port"))
    try:
        info = client.info("replication")
    finally:
        client.close()
    offset = int(info.get("master_repl_offset") or 0)
    replicas: list[dict[str, Any]] = []
    for key, value in info.items():
        if not re.fullmatch(r"slave\d+", key) or not isinstance(value, dict):
            continue
        replicas.append(
            {
                "address": _address(value.get("ip"), value.get("port")),
                "state": value.get("state"),
                # Seconds since the replica last acknowledged the stream, and bytes it lacks.
                "lag_seconds": int(value.get("lag") or 0),
                "lag_bytes": max(0, offset - int(value.get("offset") or 0)),
            }
        )
    report: dict[str, Any] = {
        "mode": mode,
        "primary": primary,
        "role": info.get("role"),
        "replicas": replicas,
        "replicas_online": sum(1 for r in replicas if r["state"] == "online"),
        "max_lag_seconds": max((int(r["lag_seconds"]) for r in replicas), default=None),
        "max_lag_bytes": max((int(r["lag_bytes"]) for r in replicas), default=None),
    }
    if info.get("role") != "master":
        report["master"] = _address(info.get("master_host"), info.get("master_port"))
    return report


class _CacheClient(RedisCacheClient):
    """Django's Redis cache client, connected through redis_client (so Sentinel works)."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._url = servers[0]
        self._pool: Any = None

    def _get_connection_pool(self, write: bool) -> Any:
        if self._pool is None:
            # The parser class and the OPTIONS of settings.CACHES, as Django assembled them.
            options = self.__dict__["_pool_options"]
            self._pool = redis_client(self._url, **options).connection_pool
        return self._pool


class ZenithRedisCache(RedisCache):
    """settings.CACHES backend for REDIS_URL: `redis://...` or a Sentinel URL (one primary)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # Django splits LOCATION on ';' into primary and replicas; a Sentinel URL is one target.
        self._servers = [server]
        self._class = _CacheClient
