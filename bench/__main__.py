"""`make bench`: run every benchmark module, print one table, write bench/results/latest.{md,json}.

Each module `bench/bench_*.py` has `run() -> list[dict]` with rows
{"name", "value", "baseline", "ratio", "unit", "note"}. A module that fails is reported
as a row with its error: benchmarks report, they never fail the run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> dict[str, str]:
    import celery
    import django
    import sklearn

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        # The machine may be shared: the load when the run ended says how noisy it was.
        "load average (1/5/15 min) at the end": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
        "django": django.__version__,
        "celery": celery.__version__,
        "scikit-learn": sklearn.__version__,
        "database": os.environ.get("DATABASE_URL", "sqlite (default)").split("@")[-1],
        "broker": os.environ.get("CELERY_BROKER_URL", "filesystem:// (default)").split("@")[-1],
    }


def table(rows: list[dict], info: dict[str, str]) -> str:
    lines = ["# Zenith benchmarks", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines += [
        "",
        "| benchmark | value | baseline | ratio | unit | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.get("ratio")
        lines.append(
            "| {name} | {value} | {baseline} | {ratio} | {unit} | {note} |".format(
                name=row.get("name", "?"),
                value=_fmt(row.get("value")),
                baseline=_fmt(row.get("baseline")),
                ratio=f"{ratio:.2f}x" if isinstance(ratio, int | float) else "-",
                unit=row.get("unit", ""),
                note=str(row.get("note", "")).replace("|", "/"),
            )
        )
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


MARKER = "BENCH_ROWS_JSON:"
# Each module runs in a process of its own: every one sets Django up on its own database.
CHILD = (
    "import json, sys, importlib; "
    "rows = importlib.import_module('bench.' + sys.argv[1]).run(); "
    f"print({MARKER!r} + json.dumps(rows, default=str))"
)


def run_module(name: str) -> list[dict]:
    """One module's rows; a module that fails becomes a row naming the failure."""
    process = subprocess.run(
        [sys.executable, "-c", CHILD, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=1800,
        check=False,
    )
    for line in process.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line.removeprefix(MARKER))
    print(process.stdout[-3000:], flush=True)
    return [{"name": name, "note": f"failed (exit {process.returncode}); see the output above"}]


def _with_earlier_rows(rows: list[dict], *, ran: set[str]) -> list[dict]:
    """These rows, and the earlier latest.json's rows of the modules not run this time.

    Running one module (`python -m bench bench_floor`) keeps every other module's figures,
    each marked with the date it was measured.
    """
    earlier_file = HERE / "results" / "latest.json"
    try:
        earlier = json.loads(earlier_file.read_text())
    except (OSError, ValueError):
        return rows
    measured = earlier.get("machine", {}).get("date", "an earlier run")
    kept = []
    for row in earlier.get("rows", []):
        if row.get("module") in ran:
            continue
        row = dict(row)
        if "measured" not in row:
            row["measured"] = measured
            row["note"] = f"{row.get('note', '')} [measured {measured}, not in this run]"
        kept.append(row)
    # Stable: each module's rows stay in their own order.
    return sorted([*kept, *rows], key=lambda row: row.get("module", ""))


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    wanted = set(argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    rows: list[dict] = []
    ran: set[str] = set()
    for name in modules:
        if wanted and name not in wanted and name.removeprefix("bench_") not in wanted:
            continue
        ran.add(name)
        started = time.monotonic()
        print(f"running {name} ...", flush=True)
        result = run_module(name)
        for row in result:
            row.setdefault("module", name)
        rows.extend(result)
        print(f"  {name} took {time.monotonic() - started:.1f}s", flush=True)
    info = machine()
    rows = _with_earlier_rows(rows, ran=ran)
    text = table(rows, info)
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
