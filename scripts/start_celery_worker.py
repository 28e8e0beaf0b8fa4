#!/usr/bin/env python
"""Start a Celery worker of one type, beat or Flower: the commands Docker and the tests run.

    scripts/start_celery_worker.py worker --worker-type general|ml|sync|all [--concurrency N]
    scripts/start_celery_worker.py beat
    scripts/start_celery_worker.py flower --port 5555

The process execs Celery itself, so signals (SIGTERM, SIGKILL) reach Celery directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

QUEUES = {
    "general": ["default"],
    "ml": ["ml_tasks"],
    "sync": ["sync_tasks"],
    "all": ["default", "ml_tasks", "sync_tasks"],
}


def _env_debug() -> bool:
    return os.environ.get("DJANGO_DEBUG", "0").strip().lower() in {"1", "true", "yes", "on"}


def _env_json_logs() -> bool:
    """ZENITH_LOG_FORMAT as zenith/settings.py reads it: JSON unless set or in DEBUG."""
    default = "plain" if _env_debug() else "json"
    return (os.environ.get("ZENITH_LOG_FORMAT") or default).strip().lower() == "json"


def build_command(args: argparse.Namespace) -> list[str]:
    """The celery command line for the parsed arguments."""
    celery = [sys.executable, "-m", "celery", "-A", "zenith"]
    if _env_json_logs() and args.command in ("worker", "beat"):
        # The start-up banner is printed, not logged: it would be the one non-JSON output.
        celery.append("--quiet")
    if args.command == "worker":
        command = [
            *celery,
            "worker",
            "--loglevel",
            args.loglevel,
            "--queues",
            ",".join(QUEUES[args.worker_type]),
            "--hostname",
            args.hostname or f"{args.worker_type}@%h",
            "--pool",
            args.pool,
        ]
        if args.concurrency:
            command += ["--concurrency", str(args.concurrency)]
        if args.max_tasks_per_child:
            command += ["--max-tasks-per-child", str(args.max_tasks_per_child)]
        return command
    if args.command == "beat":
        return [*celery, "beat", "--loglevel", args.loglevel, "--pidfile="]
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if not auth and not _env_debug():
        raise SystemExit("FLOWER_BASIC_AUTH (user:password) must be set when DJANGO_DEBUG is off")
    # Flower reads FLOWER_BASIC_AUTH from its environment itself: the credentials stay off
    # the command line, where `ps` and /proc/<pid>/cmdline would show them to every user.
    return [*celery, "flower", f"--port={args.port}", f"--address={args.address}"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="a worker consuming the queues of one type")
    worker.add_argument("--worker-type", choices=sorted(QUEUES), default="general")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--hostname", default=None)
    worker.add_argument("--max-tasks-per-child", type=int, default=None)
    worker.add_argument("--loglevel", default="INFO")
    beat = commands.add_parser("beat", help="the scheduler (DatabaseScheduler)")
    beat.add_argument("--loglevel", default="INFO")
    flower = commands.add_parser("flower", help="Flower, with basic auth")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = build_command(args)
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    os.execv(command[0], command)  # noqa: S606 - replaces this process with Celery


if __name__ == "__main__":
    main()
