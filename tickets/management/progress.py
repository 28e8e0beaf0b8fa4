"""Progress for management commands: a live bar in a terminal, plain lines elsewhere.

Every long command (`import_tickets`, `train_models`, `classify_tickets`, `sync_email`,
`sync_slack`) takes ``--no-progress`` and reports through one ``ProgressCallback``
(``on_progress(done, total, message)``), the same one its service reports to a task.
In a terminal the bar (rich) shows a spinner and the elapsed time between reports, so a
long phase is never silent; when stdout is not a terminal (a log file, CI, a pipe) it
prints ``label: done/total message`` lines at most every ``PLAIN_INTERVAL`` seconds and
on the last report, with no carriage returns or colour codes to garble a log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_INTERVAL = 2.0


def add_progress_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--no-progress",
        dest="no_progress",
        action="store_true",
        help="plain progress lines even in a terminal (they are plain anyway when piped)",
    )


class _PlainReporter:
    def __init__(self, command: BaseCommand, label: str) -> None:
        self.command, self.label = command, label
        self.last = float("-inf")
        self.last_line = ""

    def __call__(self, done: int, total: int, message: str) -> None:
        now = time.monotonic()
        finished = total > 0 and done >= total
        if not finished and now - self.last < PLAIN_INTERVAL:
            return
        count = f"{done}/{total}" if total > 0 else str(done)
        line = f"{self.label}: {count} {message}".rstrip()
        if line != self.last_line:
            self.command.stdout.write(line)
        self.last, self.last_line = now, line


class _BarReporter:
    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=None, message="")

    def __call__(self, done: int, total: int, message: str) -> None:
        self.progress.update(self.task, completed=done, total=total or None, message=message)


@contextmanager
def command_progress(command: BaseCommand, options: dict[str, Any], label: str) -> Iterator[Any]:
    """A ``ProgressCallback`` for the duration of the block (bar or plain lines)."""
    out = command.stdout
    if options.get("no_progress") or not out.isatty():
        yield _PlainReporter(command, label)
        return
    console = Console(file=out._out, force_terminal=True)  # the command's own stream
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield _BarReporter(progress, label)
