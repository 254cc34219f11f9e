"""The "dashboard" section of benchmarks/run.py: the admin's dashboard over 1,000 and
100,000 finished and waiting instances (10,000 with ``--quick``), bulk-inserted as a
fixture spread over the last 30 days (the page's default period), so that every row
is in the period: the worst case for the aggregates. Then the same number spread over
a year, the page still on its 30 days: a deployment with history.

Each instance has two machine runs (``validate``, ``charge``) with durations and queue
delays; 5% failed at ``charge``; 15% wait at a human step ``review`` with an open task
for one of four groups, a third of them overdue; 1% have a queued run (the backlog).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from datetime import timedelta


@contextlib.contextmanager
def explicit_times() -> Iterator[None]:
    """bulk_create keeps the fixture's times: auto_now_add off while it runs."""
    from django_workflows.models import HumanTask, StepRun, WorkflowInstance

    fields = [
        WorkflowInstance._meta.get_field("started_at"),
        StepRun._meta.get_field("created_at"),
        HumanTask._meta.get_field("created_at"),
    ]
    for f in fields:
        f.auto_now_add = False
    try:
        yield
    finally:
        for f in fields:
            f.auto_now_add = True


def insert_history(definition, start: int, count: int, days: int = 30, seed: int = 7) -> None:
    """``count`` instances with their runs and tasks, started over the last ``days``."""
    from django.db import transaction
    from django.utils import timezone

    from django_workflows.models import (
        HumanTask,
        HumanTaskGroup,
        StepRun,
        WorkflowInstance,
    )

    rng = random.Random(seed + start)
    now = timezone.now()
    groups = ("managers", "finance", "legal", "it")
    chunk = 5000
    with explicit_times():
        for first in range(start, start + count, chunk):
            numbers = range(first, min(first + chunk, start + count))
            shapes = []
            for n in numbers:
                began = now - timedelta(seconds=rng.uniform(3600, days * 86400 - 3600))
                kind = rng.random()
                status = "failed" if kind < 0.05 else "waiting" if kind < 0.20 else "completed"
                status = "running" if kind > 0.99 else status
                shapes.append((n, began, status))
            with transaction.atomic():
                instances = WorkflowInstance.objects.bulk_create(
                    [
                        WorkflowInstance(
                            definition=definition,
                            status=status,
                            business_key=f"dash-{n}",
                            started_at=began,
                            finished_at=began + timedelta(seconds=20)
                            if status in ("completed", "failed")
                            else None,
                            failed_step="charge" if status == "failed" else "",
                        )
                        for n, began, status in shapes
                    ],
                    batch_size=1000,
                )
                runs, waits = [], []
                for instance, (_n, began, status) in zip(instances, shapes, strict=True):
                    at = began
                    for step, slow in (("validate", 0.5), ("charge", 4.0)):
                        queued, at = at, at + timedelta(seconds=rng.expovariate(20))
                        took = timedelta(seconds=rng.expovariate(1 / slow))
                        failed = step == "charge" and status == "failed"
                        runs.append(
                            StepRun(
                                instance=instance,
                                step_name=step,
                                step_type="machine",
                                status="failed" if failed else "completed",
                                attempt=1,
                                queued_at=queued,
                                created_at=queued,
                                started_at=at,
                                finished_at=at + took,
                            )
                        )
                        at += took
                    if status == "waiting":
                        waits.append(
                            StepRun(
                                instance=instance,
                                step_name="review",
                                step_type="human",
                                status="waiting",
                                created_at=at,
                            )
                        )
                    elif status == "running":
                        runs.append(
                            StepRun(
                                instance=instance,
                                step_name="notify",
                                step_type="machine",
                                status="queued",
                                queued_at=now - timedelta(seconds=rng.uniform(0, 60)),
                                created_at=at,
                            )
                        )
                StepRun.objects.bulk_create(runs, batch_size=1000)
                waits = StepRun.objects.bulk_create(waits, batch_size=1000)
                tasks = HumanTask.objects.bulk_create(
                    [
                        HumanTask(
                            instance_id=run.instance_id,
                            step_run=run,
                            step_name="review",
                            title="Review",
                            created_at=run.created_at,
                            due_at=run.created_at + timedelta(days=rng.choice((2, 10, 40))),
                        )
                        for run in waits
                    ],
                    batch_size=1000,
                )
                HumanTaskGroup.objects.bulk_create(
                    [HumanTaskGroup(task=t, name=rng.choice(groups)) for t in tasks],
                    batch_size=1000,
                )


def settle() -> None:
    """What autovacuum does after a bulk load (and after clear_workflow_rows's DELETE,
    whose dead rows a scan would otherwise read): VACUUM ANALYZE; ANALYZE on SQLite."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def dashboard(report, quick: bool) -> None:
    """The page must not grow with the rows: same statements; p99 < 500 ms at 100,000."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from run import bench_registry, clear_workflow_rows, progress, timed

    from django_workflows.engine import LocalExecutionEngine
    from django_workflows.engine.instances import definition_row

    sizes = (1_000, 10_000) if quick else (1_000, 100_000)
    reps, budget = ((5, 20), 2.0) if quick else ((20, 60), 10.0)
    clear_workflow_rows()
    engine = LocalExecutionEngine(bench_registry())
    definition = definition_row(engine.registry.get_definition("bench_review"))
    admin, _ = get_user_model().objects.get_or_create(
        username="bench-dashboard", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)

    def page() -> None:
        response = client.get("/admin/django_workflows/dashboard/")
        assert response.status_code == 200, response.status_code
        assert b'role="img"' in response.content

    results = {}
    inserted = 0
    for size in sizes:
        progress(f"dashboard: inserting {size - inserted:,} instances, 2-3 runs each")
        insert_history(definition, inserted, size - inserted)
        inserted = size
        settle()
        progress(f"dashboard: measuring at {size:,} instances")
        results[size] = timed(page, reps, budget)
    small, large = (results[s] for s in sizes)
    # A year of history, the page's default 30 days: what a deployment sees as it ages.
    clear_workflow_rows()
    progress(f"dashboard: inserting {sizes[1]:,} instances over 365 days")
    insert_history(definition, 0, sizes[1], days=365)
    settle()
    progress(f"dashboard: measuring {sizes[1]:,} instances over 365 days")
    year = timed(page, reps, budget)
    report.add(
        "dashboard: admin page (30 days)",
        f"{large.p99:,.1f} ms",
        f"{sizes[0]:,}: p50 {small.p50:.1f} p99 {small.p99:.1f} ms, {small.statements} stmts; "
        f"{sizes[1]:,}: p50 {large.p50:.1f} p99 {large.p99:.1f} ms, {large.statements} stmts "
        f"({small.calls}/{large.calls} calls)",
        target="same stmts, p99 < 500 ms",
        ok=small.statements == large.statements and large.p99 < 500,
    )
    report.add(
        "dashboard: 100,000 over a year, 30 days",
        f"{year.p99:,.1f} ms",
        f"p50 {year.p50:.1f} p99 {year.p99:.1f} ms, {year.statements} stmts ({year.calls} calls)",
        target="p99 < 500 ms",
        ok=year.p99 < 500,
    )
    clear_workflow_rows()
