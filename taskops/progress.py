"""The one progress-callback type that long services accept (kept free of Django)."""

from __future__ import annotations

from collections.abc import Callable

# on_progress(done, total, message): called by a service as it goes; a task forwards it to
# ZenithTask.progress (the ledger and the API show it), a command to its progress bar.
ProgressCallback = Callable[[int, int, str], None]


def no_progress(done: int, total: int, message: str) -> None:
    """The default callback: report nothing."""
