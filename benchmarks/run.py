"""Benchmarks: the database work per step, against the floor of what a durable step needs.

    python benchmarks/run.py [--quick] [--database sqlite|postgres|both] [--only NAME ...]

Prints one table per database with the machine's details. Each database is a scratch
one (a temp SQLite file; a ``bench_workflows`` PostgreSQL database, recreated), so the
numbers never mix with a project's data. Statements are counted with Django's query
capture; "stmts" excludes transaction control (BEGIN, COMMIT, SAVEPOINT), "tx" counts
the transactions.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_BENCH_DB = "bench_workflows"
TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")


@dataclass
class Row:
    name: str
    value: str
    detail: str = ""
    target: str = ""
    ok: bool | None = None


@dataclass
class Report:
    database: str
    rows: list[Row] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def print(self) -> None:
        width = max(len(r.name) for r in self.rows) if self.rows else 10
        print(f"\n== {self.database} ==")
        print(f"{'measure'.ljust(width)}  {'value':>14}  {'target':<22} detail")
        for r in self.rows:
            mark = "" if r.ok is None else ("✓ " if r.ok else "✗ ")
            print(f"{r.name.ljust(width)}  {r.value:>14}  {(mark + r.target):<22} {r.detail}")


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def count_statements(fn: Callable[[], object]) -> tuple[int, int]:
    """(statements without transaction control, transactions) that ``fn`` runs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        fn()
    sqls = [q["sql"].strip().upper() for q in ctx.captured_queries]
    statements = [s for s in sqls if not s.startswith(TX_CONTROL)]
    transactions = sum(1 for s in sqls if s.startswith(("BEGIN", "COMMIT")) and s != "BEGIN")
    # psycopg starts transactions implicitly: count COMMITs (SQLite logs BEGIN and COMMIT).
    transactions = sum(1 for s in sqls if s.startswith("COMMIT")) or transactions
    return len(statements), transactions


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- workflows -------------------------------------------------------------------------


def bench_registry():
    from django_workflows import (
        BaseHumanStep,
        BaseMachineStep,
        Edge,
        WorkflowDefinition,
        WorkflowRegistry,
    )

    class Noop(BaseMachineStep):
        def execute(self, context):
            context.set(context.step_name, 1)

    class Approve(BaseHumanStep):
        title = "Approve"

    reg = WorkflowRegistry()
    reg.register_definition(
        WorkflowDefinition(
            name="bench_chain",
            version="1",
            initial_step="s1",
            steps={f"s{i}": Noop() for i in range(1, 11)},
            edges=[Edge(f"s{i}", f"s{i + 1}") for i in range(1, 10)],
        )
    )
    reg.register_definition(
        WorkflowDefinition(name="bench_one", version="1", initial_step="s1", steps={"s1": Noop()})
    )
    reg.register_definition(
        WorkflowDefinition(
            name="bench_approval", version="1", initial_step="approve", steps={"approve": Approve()}
        )
    )
    reg.register_definition(
        WorkflowDefinition(
            name="bench_fan_out",
            version="1",
            initial_step="start",
            steps={"start": Noop(), "a": Noop(), "b": Noop(), "c": Noop(), "join": Noop()},
            edges=[
                *(Edge("start", x) for x in "abc"),
                *(Edge(x, "join") for x in "abc"),
            ],
        )
    )
    return reg


# -- sections --------------------------------------------------------------------------


def floor(report: Report, n: int) -> float:
    """Lock the instance row, update it, insert one row, commit: the least a step needs."""
    from django.db import transaction
    from django.utils import timezone

    from django_workflows.engine import LocalExecutionEngine
    from django_workflows.models import WorkflowEvent, WorkflowInstance

    engine = LocalExecutionEngine(bench_registry())
    instance = engine.start_workflow("bench_approval")

    def one() -> None:
        with transaction.atomic():
            row = WorkflowInstance.objects.select_for_update().get(pk=instance.pk)
            WorkflowInstance.objects.filter(pk=row.pk).update(updated_at=timezone.now())
            WorkflowEvent.objects.create(instance=row, type="Bench", created_at=timezone.now())

    one()
    started = time.perf_counter()
    for _ in range(n):
        one()
    per_second = rate(n, time.perf_counter() - started)
    statements, tx = count_statements(one)
    report.add("floor", f"{per_second:,.0f}/s", f"{statements} stmts, {tx} tx per op")
    return per_second


def sequential(report: Report, n: int, floor_rate: float, vendor: str) -> None:
    from django_workflows.engine import LocalExecutionEngine

    engine = LocalExecutionEngine(bench_registry())
    engine.start_workflow("bench_chain")  # warm up: stores the definition version
    started = time.perf_counter()
    for _ in range(n):
        engine.start_workflow("bench_chain")
    seconds = time.perf_counter() - started
    steps_per_second = rate(n * 10, seconds)
    engine.start_workflow("bench_one")
    statements, tx = count_statements(lambda: engine.start_workflow("bench_chain"))
    one_statements, one_tx = count_statements(lambda: engine.start_workflow("bench_one"))
    ratio = steps_per_second / floor_rate
    report.add(
        "sequential instances/s",
        f"{rate(n, seconds):,.1f}/s",
        f"{n} instances x 10 machine steps",
    )
    report.add(
        "sequential steps/s",
        f"{steps_per_second:,.0f}/s",
        f"{ratio:.0%} of floor",
        target=">= 50% of floor" if vendor == "postgresql" else "",
        ok=ratio >= 0.5 if vendor == "postgresql" else None,
    )
    # The marginal cost of a step: a 10-step instance minus a 1-step one, over 9.
    per_step = (statements - one_statements) / 9
    tx_per_step = (tx - one_tx) / 9
    report.add(
        "statements per step",
        f"{per_step:.1f}",
        f"{tx_per_step:.1f} tx per step; {statements} stmts per 10-step instance incl. start",
        target="<= 5",
        ok=per_step <= 5,
    )


def human(report: Report, n: int) -> None:
    from django_workflows.engine import LocalExecutionEngine
    from django_workflows.models import HumanTask

    engine = LocalExecutionEngine(bench_registry())
    instances = [engine.start_workflow("bench_approval") for _ in range(n + 1)]
    tasks = dict(HumanTask.objects.filter(status="open").values_list("instance_id", "pk"))
    first = instances.pop()
    statements, tx = count_statements(lambda: engine.complete_task(tasks[first.pk], None, {}))
    started = time.perf_counter()
    for instance in instances:
        engine.complete_task(tasks[instance.pk], None, {})
    seconds = time.perf_counter() - started
    report.add(
        "human completions/s (engine)",
        f"{rate(n, seconds):,.0f}/s",
        f"{tx} tx per completion",
    )
    report.add(
        "statements per completion",
        f"{statements}",
        "complete_task(), the instance read back included",
        target="<= 8",
        ok=statements <= 8,
    )


def fan_out(report: Report, n: int) -> None:
    """A 3-branch fan-out whose branches are completed by 8 threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from django_workflows.engine.core import BaseExecutionEngine
    from django_workflows.models import StepRun

    class Queueing(BaseExecutionEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.lock = threading.Lock()
            self.queued: list[int] = []

        def dispatch(self, run_ids):
            with self.lock:
                self.queued.extend(run_ids)

    engine = Queueing(bench_registry())
    instances = [engine.start_workflow("bench_fan_out") for _ in range(n)]
    steps = 0
    started = time.perf_counter()

    def work(run_id: int) -> list[int]:
        try:
            return engine.process_run(run_id)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(8) as pool:
        while engine.queued:
            batch, engine.queued = engine.queued, []
            steps += len(batch)
            for follow_ups in pool.map(work, batch):
                engine.dispatch(follow_ups)
    seconds = time.perf_counter() - started
    joins = StepRun.objects.filter(instance__in=instances, step_name="join", status="completed")
    once = joins.count() == n
    report.add(
        "fan-out steps/s (8 threads)",
        f"{rate(steps, seconds):,.0f}/s",
        f"{n} instances, {joins.count()} joins",
        target="join once each",
        ok=once,
    )


SECTIONS = ("floor", "sequential", "human", "fan-out")


def run_database(vendor_name: str, url: str, quick: bool, only: set[str]) -> None:
    setup_django(url)
    from django.db import connection

    report = Report(f"{vendor_name}: {connection.vendor} {connection.Database.__name__}")
    n = 20 if quick else 300
    floor_rate = floor(report, n * 5)
    if "sequential" in only:
        sequential(report, n, floor_rate, connection.vendor)
    if "human" in only:
        human(report, n)
    if "fan-out" in only and connection.vendor == "postgresql":
        fan_out(report, n // 2)
    report.print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small counts: a smoke run.")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one database per process: Django is set up once per process
        vendor, url = args.child.split("=", 1)
        run_database(vendor, url, args.quick, set(args.only))
        return

    print(f"django-workflows benchmarks{' (quick)' if args.quick else ''}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.platform()}"
    )
    targets = []
    if args.database in ("sqlite", "both"):
        targets.append(("sqlite", f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"))
    if args.database in ("postgres", "both"):
        recreate_pg()
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        targets.append(("postgres", f"{base}/{PG_BENCH_DB}"))
    for vendor, url in targets:
        cmd = [sys.executable, __file__, f"--child={vendor}={url}", "--only", *args.only]
        if args.quick:
            cmd.append("--quick")
        subprocess.run(cmd, check=True, cwd=ROOT)  # noqa: S603 - ourselves


def recreate_pg() -> None:
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as c:
        c.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {PG_BENCH_DB}")


if __name__ == "__main__":
    main()
