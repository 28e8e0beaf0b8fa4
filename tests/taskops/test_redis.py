"""taskops.redis: redis:// and sentinel:// URLs become clients of the current primary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured

from taskops import health
from taskops.redis import (
    ZenithRedisCache,
    celery_transport_options,
    parse_sentinel_url,
    redis_client,
    redis_topology,
)
from tests.support.sentinel import SentinelCluster
from tests.support.services import missing, redis_available, redis_url


@pytest.fixture
def cluster(tmp_path, settings) -> Iterator[SentinelCluster]:
    """One primary, one replica and one sentinel on loopback (a failover test's small cousin)."""
    if not SentinelCluster.available():
        missing("redis-server (to run a private Redis Sentinel set-up)")
    cluster = SentinelCluster(root=tmp_path / "sentinel", replicas=1, sentinels=1).start()
    settings.ZENITH_REDIS_SENTINEL_MASTER = cluster.master_name
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_sentinel_url_names_its_sentinels_database_and_passwords(settings):
    settings.ZENITH_REDIS_SENTINEL_MASTER = "main"
    settings.ZENITH_REDIS_SENTINEL_PASSWORD = "sentinel-secret"

    target = parse_sentinel_url("sentinel://:node-secret@10.0.0.1:26379;sentinel://10.0.0.2/3")

    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (target.master, target.db) == ("main", 3)
    assert (target.password, target.sentinel_password) == ("node-secret", "sentinel-secret")
    assert celery_transport_options("sentinel://10.0.0.1:26379/1") == {
        "master_name": "main",
        "sentinel_kwargs": {"password": "sentinel-secret"},
    }
    assert celery_transport_options("redis://localhost:6379/1") == {}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://10.0.0.1:26379/x", "the database of"),
        ("sentinel://10.0.0.1:26379;redis://10.0.0.2:6379/1", "not a sentinel://host:port URL"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_the_part(settings, url, message):
    settings.ZENITH_REDIS_SENTINEL_MASTER = "main"
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_sentinel_url(url)


def test_a_sentinel_url_without_a_master_name_is_a_configuration_error(settings):
    settings.ZENITH_REDIS_SENTINEL_MASTER = ""
    with pytest.raises(ImproperlyConfigured, match="ZENITH_REDIS_SENTINEL_MASTER"):
        redis_client("sentinel://127.0.0.1:26379/0")


def test_a_client_of_a_sentinel_url_writes_to_the_primary_in_its_database(cluster):
    client = redis_client(cluster.url(db=4))
    client.set("zenith:probe", "written")

    assert cluster.primary().client(db=4).get("zenith:probe") == b"written"
    # The replica has it once WAIT says so: the client wrote to the primary of the set.
    assert client.wait(1, 5000) == 1
    replica = next(node for node in cluster.nodes if node is not cluster.primary())
    assert replica.client(db=4).get("zenith:probe") == b"written"


def test_the_topology_names_the_primary_and_each_replica_with_its_lag(cluster):
    topology = redis_topology(cluster.url())

    replica = next(node for node in cluster.nodes if node is not cluster.primary())
    assert topology["mode"] == "sentinel"
    assert topology["primary"] == cluster.primary().address
    assert topology["role"] == "master"
    assert [r["address"] for r in topology["replicas"]] == [replica.address]
    assert topology["replicas_online"] == 1
    assert topology["max_lag_bytes"] >= 0


def test_the_django_cache_works_through_the_sentinels(cluster):
    cache = ZenithRedisCache(cluster.url(db=5), {})
    cache.set("greeting", {"hello": "world"}, 30)

    assert cache.get("greeting") == {"hello": "world"}
    assert cache.add("greeting", "again", 30) is False


def test_health_reports_a_plain_redis_broker_as_its_own_primary(settings):
    if not redis_available():
        missing("Redis")
    settings.CELERY_BROKER_URL = redis_url()

    check = health.check_redis()

    assert check["ok"] is True
    assert check["mode"] == "standalone"
    assert check["role"] == "master"


def test_health_names_a_replica_configured_as_the_broker_as_not_a_primary(cluster, settings):
    replica = next(node for node in cluster.nodes if node is not cluster.primary())
    settings.CELERY_BROKER_URL = f"redis://{replica.address}/0"

    check = health.check_redis()

    assert check["ok"] is False
    assert "is a slave, not a primary" in check["error"]
    assert check["master"] == cluster.primary().address
