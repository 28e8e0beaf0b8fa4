"""import_tickets on the shared dataset and on a CSV with broken rows."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tickets.demo import DEMO_DATASET
from tickets.models import LabelSource, Organization, Ticket

pytestmark = pytest.mark.django_db

ARGS = ["--text", "title,body", "--label", "category=category", "--label", "priority=urgency"]


def run_import(path: Path, *extra: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(
        "import_tickets", str(path), "--org", "helpdesk", *ARGS, *extra, stdout=out, stderr=err
    )
    return out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_shared_dataset_imports_every_row_once():
    out, _ = run_import(DEMO_DATASET)

    organization = Organization.objects.get(slug="helpdesk")
    tickets = Ticket.objects.filter(organization=organization)
    assert "5431 imported" in out
    assert tickets.count() == 5431
    assert tickets.filter(category_source=LabelSource.IMPORT).count() == 5431
    assert tickets.filter(category="4").count() == pytest.approx(0.69 * 5431, rel=0.02)
    assert tickets.exclude(priority="").count() == 5431

    again, _ = run_import(DEMO_DATASET)
    assert "0 imported, 5431 already present" in again
    assert tickets.count() == 5431


def test_broken_rows_are_reported_by_line_and_the_rest_imported(tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_bytes(
        b"title,body,category,urgency\n"
        b"printer jam,the printer on floor 2 jams,4,3\n"
        b"too,many,columns,4,3\n"
        b",,4,3\n"
        b"caf\xe9 latin-1 title,body,5,2\n"
        b'"multi\nline title",body spanning,6,1\n'
        b"vpn down,cannot connect to vpn,4,3\n"
    )

    out, err = run_import(path)

    assert "3 imported" in out
    assert "3 rejected" in out
    assert "line 3: expected 4 columns, found 5" in err
    assert "line 4: empty text" in err
    assert "line 5: not valid UTF-8" in err
    subjects = set(Ticket.objects.values_list("subject", flat=True))
    assert subjects == {"printer jam", "multi\nline title", "vpn down"}


def test_id_column_becomes_the_external_id(tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text("key,title,body,category\nT-1,a,b,4\nT-2,c,d,5\n")
    call_command(
        "import_tickets",
        str(path),
        "--org",
        "helpdesk",
        "--text",
        "title,body",
        "--label",
        "category=category",
        "--id-column",
        "key",
        stdout=StringIO(),
    )
    assert set(Ticket.objects.values_list("external_id", flat=True)) == {"T-1", "T-2"}
    path.write_text("key,title,body,category\nT-1,changed,b,4\nT-3,e,f,6\n")
    call_command(
        "import_tickets",
        str(path),
        "--org",
        "helpdesk",
        "--text",
        "title,body",
        "--label",
        "category=category",
        "--id-column",
        "key",
        stdout=StringIO(),
    )
    assert Ticket.objects.count() == 3
    assert Ticket.objects.get(external_id="T-1").subject == "a"


def test_unknown_column_is_a_clear_error(tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text("title,body\na,b\n")
    with pytest.raises(CommandError, match="column\\(s\\) not in the file: category"):
        run_import(path)
    assert not Ticket.objects.exists()
