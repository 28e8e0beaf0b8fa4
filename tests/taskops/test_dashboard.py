"""The monitoring profile: Grafana's dashboard, Prometheus' scrape and their compose services.

Docker cannot run here, so the files are checked as the tools would read them, and every
series the dashboard queries is looked up in a real GET /metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mlmodels.models import ModelStatus
from taskops import services
from taskops.models import TaskState
from tests.mlmodels.factories import ModelVersionFactory, PredictionFactory
from tests.tickets.factories import TicketFactory
from tickets.models import Source, Ticket

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
PROVISIONING = DOCKER / "grafana" / "provisioning"
TOKEN = "dashboard-scrape-token"
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge", "gauge", "table", "piechart", "text"}
# Grafana's own variables, which Prometheus never sees: any duration parses the same.
GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<selector>.+),)?\s*(?P<label>\w+)\s*\)\s*$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_services() -> dict[str, Any]:
    return load_yaml(COMPOSE)["services"]


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """{container path: host path} of a service's bind mounts (paths relative to docker/)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (DOCKER / source).resolve()
    return found


def datasource_uid() -> str:
    (datasource,) = [
        source
        for path in sorted((PROVISIONING / "datasources").glob("*.yml"))
        for source in load_yaml(path)["datasources"]
    ]
    assert datasource["type"] == "prometheus"
    return datasource["uid"]


def dashboard_files() -> list[Path]:
    """The JSON files the dashboard providers load, through Grafana's mounts in compose."""
    grafana = mounts(compose_services()["grafana"])
    files = []
    for path in sorted((PROVISIONING / "dashboards").glob("*.yml")):
        for provider in load_yaml(path)["providers"]:
            assert provider["type"] == "file"
            files += sorted(grafana[provider["options"]["path"]].glob("*.json"))
    assert files, "no dashboard JSON is provisioned"
    return files


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            match = LABEL_VALUES.match(query)
            yield f"variable {variable['name']!r}", match["selector"] if match else query


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector of a PromQL expression."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr}"
            found.append((node.name, {m.name for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(GRAFANA_DURATIONS.sub("5m", expr)), visit)
    return found


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_dashboard_is_grafana_dashboard_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    uid = datasource_uid()

    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("h", "w", "x", "y")), panel["title"]
        assert grid["w"] > 0
        assert grid["h"] > 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']!r} overlaps {other!r}"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']!r} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid
    for where, expr in queries(dashboard):
        assert selectors(expr), f"{where} reads no metric: {expr}"


@pytest.fixture
def busy_database(make_record: Any, organization: Any, other_organization: Any) -> None:
    """Tasks in several states, tickets from every source, predictions and beat's heartbeat."""
    now = timezone.now()
    for name, state, runtime in [
        ("taskops.tasks.noop", TaskState.SUCCESS, 0.2),
        ("taskops.tasks.noop", TaskState.PENDING, None),
        ("mlmodels.tasks.classify_ticket_task", TaskState.SUCCESS, 1.5),
        ("integrations.tasks.sync_slack_tickets", TaskState.FAILURE, 3.0),
        ("integrations.tasks.process_email_tickets", TaskState.STARTED, None),
    ]:
        make_record(name=name, state=state, runtime=runtime, queued_at=now, updated_at=now)
    services.heartbeat_record(name="beat")
    for org in (organization, other_organization):
        version = ModelVersionFactory(
            organization=org, target="category", version=1, status=ModelStatus.ACTIVE
        )
        for source, confidence in zip(Source.values, (0.2, 0.5, 0.7, 0.9), strict=True):
            ticket = TicketFactory(organization=org, source=source)
            PredictionFactory(
                ticket=ticket,
                target="category",
                model_version=version,
                label="printing",
                confidence=confidence,
                applied=True,
            )
            if confidence < org.confidence_threshold:
                Ticket.objects.filter(pk=ticket.pk).update(needs_review=True)
    Ticket.objects.filter(source=Source.IMPORT).update(created_at=now - timedelta(hours=2))


def exposed(client: Any) -> dict[str, set[str]]:
    """{series name: label names} of a real scrape, by sample name.

    Sample names carry the suffixes PromQL selects on (_total of counters, _bucket, _count,
    _sum of histograms, _gcount, _gsum of gauge histograms); a family without samples
    shows no series in Prometheus either, so it counts as missing.
    """
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


@pytest.mark.django_db
@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_every_metric_the_dashboard_queries_is_served(
    path: Path, client: Any, settings: Any, busy_database: None
) -> None:
    settings.ZENITH_METRICS_TOKEN = TOKEN
    series = exposed(client)
    problems = []
    for where, expr in queries(json.loads(path.read_text())):
        for name, labels in selectors(expr):
            if name not in series:
                problems.append(f"{name} is not exposed by /metrics ({where})")
            elif labels - series[name]:
                problems.append(f"{name} has no label {sorted(labels - series[name])} ({where})")
    assert not problems, "; ".join(problems)


def test_prometheus_scrapes_metrics_of_web_with_the_bearer_token() -> None:
    config = load_yaml(PROMETHEUS)
    compose = load_yaml(COMPOSE)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "zenith"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    auth = job["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    web = compose["services"]["web"]
    assert targets == ["web:8000"]
    assert "0.0.0.0:8000" in web["command"]
    # ${DJANGO_ALLOWED_HOSTS:?...},web: the operator's hosts plus the name Prometheus uses.
    allowed = web["environment"]["DJANGO_ALLOWED_HOSTS"]
    assert allowed.startswith("${DJANGO_ALLOWED_HOSTS:?")
    assert allowed.rsplit("}", 1)[1].split(",")[1:] == ["web"]

    # The token file is the compose secret made from the variable web checks the token against.
    secret = Path(auth["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    assert secret.name in compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret.name] == {"environment": "ZENITH_METRICS_TOKEN"}
    assert web["environment"]["ZENITH_METRICS_TOKEN"] == "${ZENITH_METRICS_TOKEN:-}"


def test_compose_runs_prometheus_and_grafana_under_the_monitoring_profile() -> None:
    services_ = compose_services()
    profiled = {name for name, service in services_.items() if service.get("profiles")}
    assert profiled == {"prometheus", "grafana"}
    for name in profiled:
        assert services_[name]["profiles"] == ["monitoring"]
        assert services_[name]["image"].split(":")[1] not in ("", "latest"), "pin the image"

    prometheus = services_["prometheus"]
    config_flag = next(f for f in prometheus["command"] if f.startswith("--config.file="))
    assert mounts(prometheus)[config_flag.split("=", 1)[1]] == PROMETHEUS

    grafana = services_["grafana"]
    assert mounts(grafana)["/etc/grafana/provisioning"] == PROVISIONING
    assert "prometheus" in grafana["depends_on"]
    (datasource,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090"  # the service, on Prometheus' port
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    container_dir, _, filename = home.rpartition("/")
    assert (mounts(grafana)[container_dir] / filename) in dashboard_files()
