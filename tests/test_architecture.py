"""The apps' dependency order: tickets <- taskops <- {integrations, mlmodels} <- alerts.

A lower app never imports a higher one (not even inside a function), points no foreign key
at one, and none of its migrations depends on one's. import-linter checks the imports
(the contract in pyproject.toml, also run by `make lint`); Django's own registries the rest.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from django.apps import apps
from django.db.migrations.loader import MigrationLoader

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Higher may use lower; apps of one rank know nothing of each other.
RANK = {"tickets": 0, "taskops": 1, "integrations": 2, "mlmodels": 2, "alerts": 3}
PACKAGES = ("zenith", *RANK)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", "pyproject.toml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def against_the_order(edges: Iterable[tuple[str, str, str]]) -> list[str]:
    """The (from app, to app, what) edges that point up or sideways in the order."""
    return [
        f"{source} -> {target}: {what}"
        for source, target, what in edges
        if source in RANK and target in RANK and source != target and RANK[target] >= RANK[source]
    ]


def test_the_import_contract_is_kept():
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_import_contract_breaks_on_an_import_against_the_order(tmp_path):
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # Hidden inside a function, as the cycle between taskops and integrations once was.
    (tmp_path / "taskops" / "reach_up.py").write_text(
        "def rule_names():\n    from alerts.models import AlertRule\n\n"
        "    return list(AlertRule.objects.values_list('name', flat=True))\n"
    )

    result = lint_imports(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout
    assert "taskops.reach_up -> alerts.models" in result.stdout


def test_no_migration_depends_on_a_migration_of_a_higher_app():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    edges = [
        (app, dependency[0], f"{app}.{name} depends on {dependency[0]}.{dependency[1]}")
        for (app, name), migration in loader.disk_migrations.items()
        for dependency in migration.dependencies
    ]

    assert {app for app, _, _ in edges} >= set(RANK)
    assert against_the_order(edges) == []


def test_no_model_points_a_relation_at_a_model_of_a_higher_app():
    edges = [
        (
            model._meta.app_label,
            field.related_model._meta.app_label,
            f"{model._meta.label}.{field.name}",
        )
        for model in apps.get_models()
        for field in model._meta.get_fields(include_hidden=True)
        if field.concrete and field.is_relation and field.related_model is not None
    ]

    assert ("alerts", "integrations", "alerts.AlertRule.slack_workspace") in edges
    assert against_the_order(edges) == []


def test_the_order_check_names_an_edge_against_it():
    assert against_the_order(
        [
            ("taskops", "integrations", "taskops.0005 depends on integrations.0002"),
            ("integrations", "mlmodels", "sideways"),
            ("alerts", "tickets", "down is fine"),
        ]
    ) == [
        "taskops -> integrations: taskops.0005 depends on integrations.0002",
        "integrations -> mlmodels: sideways",
    ]
