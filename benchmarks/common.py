"""What the benchmark scripts share: Django on a scratch database, process groups,
scratch PostgreSQL databases, waiting on a condition, percentiles."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup_django(database_url: str, env: dict[str, str] | None = None) -> None:
    """Set Django up on ``database_url`` (the test project's settings) and migrate it."""
    os.environ.update(env or {})
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, ``p`` in percent (of 100 values, p99 is the second largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """The predicate's first true value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


class Processes:
    """Subprocesses in process groups of their own, output to ``<logs>/<name>.log``;
    ``kill_all`` ends them and their children (a cluster's workers, pusher, monitor)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        """``args`` after the Python executable: ``["manage.py", "qcluster"]``."""
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own manage.py / scripts
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        self.running.clear()


def _pg_admin(admin_url: str):
    import psycopg

    return psycopg.connect(admin_url.replace("postgres://", "postgresql://", 1), autocommit=True)


def recreate_pg(admin_url: str, name: str) -> None:
    """Drop and create the scratch database ``name`` (connected as ``admin_url``)."""
    with _pg_admin(admin_url) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {name}")


def drop_pg(admin_url: str, name: str) -> None:
    with _pg_admin(admin_url) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
