"""Long commands show progress: a live bar in a terminal, clean lines in a log."""

from __future__ import annotations

import csv
import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.support.services import database_url
from tickets.models import Ticket

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "body", "category"])
        for n in range(rows):
            writer.writerow([n, f"Printer {n} jams", "paper stuck again", "hardware"])
    return path


@pytest.mark.django_db
def test_a_log_gets_plain_lines_without_carriage_returns_or_colour(tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["--org", "acme", "--text", "title,body", "--label", "category=category"]
    call_command("import_tickets", str(_csv(tmp_path / "t.csv", 2500)), *args, stdout=out)
    text = out.getvalue()
    assert "\r" not in text
    assert not ANSI.search(text)
    assert text.splitlines()[-1].endswith("2500 imported, 0 already present, 0 rejected")
    assert re.search(r"^import t\.csv: \d+ rows read$", text, flags=re.M)
    assert Ticket.objects.count() == 2500


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run a command with a pseudo-terminal as stdout; return everything it printed."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        args, stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL, cwd=ROOT, env=env
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(controller)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.django_db(transaction=True)
def test_a_terminal_gets_a_live_bar_and_no_progress_turns_it_off(tmp_path: Path) -> None:
    path = _csv(tmp_path / "t.csv", 3000)
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_DEBUG": "1", "COLUMNS": "120"}
    base = [sys.executable, "manage.py", "import_tickets", str(path), "--org", "acme"]
    base += ["--text", "title,body", "--label", "category=category", "--id-column", "id"]

    screen = _run_in_pty(base, env)
    # rich redraws the bar in place: cursor movement, the bar's glyphs and the elapsed time.
    assert ANSI.search(screen)
    assert "━" in screen
    assert re.search(r"import t\.csv", screen)
    assert re.search(r"\d:\d\d:\d\d", screen)
    assert "3000 imported" in screen

    plain = _run_in_pty([*base, "--no-progress"], env)
    assert "━" not in plain
    assert "3000 already present" in plain
    assert Ticket.objects.count() == 3000
