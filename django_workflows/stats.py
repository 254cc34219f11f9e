"""Aggregates over the workflow tables, for the admin's dashboard: read-only, each one
statement whatever the number of rows (grouped in the database, never row by row).

Percentiles are computed the same way on every database, so that SQLite and PostgreSQL
give the same numbers: one statement numbers the values of each group in order (the
``ROW_NUMBER`` and ``COUNT`` window functions, SQLite 3.25+ and PostgreSQL alike) and
returns, per group, only the two values around each percentile's position; Python
interpolates between them as PostgreSQL's ``percentile_cont`` does. Durations are
milliseconds computed in SQL (``EXTRACT(EPOCH ...)`` on PostgreSQL, ``julianday`` on
SQLite), exact to well under a millisecond; the results are rounded to milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import Any

from django.db import connection
from django.db.models import Count, F, FloatField, Func, Min, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from .models import (
    HumanTask,
    StepRun,
    StepRunStatus,
    StepTypeChoices,
    TaskStatus,
    WorkflowInstance,
    WorkflowStatus,
)

#: The percentiles the dashboard shows.
PERCENTILES = (50, 95)
#: Age buckets of waiting tasks: (label, lower bound); the last has no upper bound.
AGE_BUCKETS: tuple[tuple[str, timedelta], ...] = (
    ("< 1 h", timedelta(0)),
    ("1 h - 1 d", timedelta(hours=1)),
    ("1 - 3 d", timedelta(days=1)),
    ("3 - 7 d", timedelta(days=3)),
    ("> 7 d", timedelta(days=7)),
)
FINISHED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED)


class MillisBetween(Func):
    """``end - start`` in milliseconds, as a float, in SQL."""

    output_field = FloatField()
    arity = 2

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # PostgreSQL
        start, end = (compiler.compile(e) for e in self.source_expressions)
        sql = f"(CAST(EXTRACT(EPOCH FROM ({end[0]} - {start[0]})) AS double precision) * 1000.0)"
        return sql, (*end[1], *start[1])

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        start, end = (compiler.compile(e) for e in self.source_expressions)
        sql = f"((julianday({end[0]}) - julianday({start[0]})) * 86400000.0)"
        return sql, (*end[1], *start[1])


@dataclass(frozen=True)
class Scope:
    """What the dashboard looks at: local days ``first`` to ``last`` (inclusive) and
    optionally the definition versions of one workflow (``definition_ids``)."""

    first: date
    last: date
    definition_ids: tuple[int, ...] | None = None
    tz: tzinfo = field(default_factory=timezone.get_current_timezone)

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=self.tz)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=self.tz)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def instances(self, prefix: str = "") -> Q:
        """The workflow filter, on instances (``prefix="instance__"`` from their rows)."""
        if self.definition_ids is None:
            return Q()
        return Q(**{f"{prefix}definition_id__in": self.definition_ids})


@dataclass
class Percentiles:
    """One group's count of values and its percentiles (ms), ``{50: 120.0, 95: 900.0}``."""

    key: tuple[Any, ...]
    count: int
    values: dict[int, float]


def percentiles(rows: QuerySet, keys: Sequence[str], value: str) -> list[Percentiles]:
    """The PERCENTILES of ``value`` for each group of ``keys`` in ``rows`` (a queryset
    annotated with them): one statement, four rows per group at most (see the module)."""
    inner, params = rows.values(*keys, value).query.sql_with_params()
    qn = connection.ops.quote_name
    groups = ", ".join(qn(k) for k in keys)
    positions = ", ".join(f"({p} * (n - 1)) / 100, ({p} * (n - 1)) / 100 + 1" for p in PERCENTILES)
    sql = (
        f"SELECT {groups}, rn, n, {qn(value)} FROM ("  # noqa: S608 - our own SQL
        f"SELECT {groups}, {qn(value)}, "
        f"ROW_NUMBER() OVER (PARTITION BY {groups} ORDER BY {qn(value)}) AS rn, "
        f"COUNT(*) OVER (PARTITION BY {groups}) AS n FROM ({inner}) AS dwf_values"
        f") AS dwf_numbered WHERE rn - 1 IN ({positions})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    found: dict[tuple[Any, ...], tuple[int, dict[int, float]]] = {}
    for *key, rn, n, v in fetched:
        found.setdefault(tuple(key), (int(n), {}))[1][int(rn) - 1] = float(v)
    result = []
    for key, (n, at) in found.items():
        values = {}
        for p in PERCENTILES:
            low, rest = divmod(p * (n - 1), 100)
            value_at = at[low]
            if rest and low + 1 in at:
                value_at += (at[low + 1] - value_at) * rest / 100
            values[p] = round(value_at)
        result.append(Percentiles(key, n, values))
    return result


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# -- the charts' data -----------------------------------------------------------------


def instances_per_day(scope: Scope) -> dict[str, dict[date, int]]:
    """Instances started, and completed / failed / canceled, per local day: two statements."""
    rows = WorkflowInstance.objects.filter(scope.instances())
    series: dict[str, dict[date, int]] = {"started": {}}
    series.update({str(status): {} for status in FINISHED})
    started = (
        rows.filter(started_at__gte=scope.since, started_at__lt=scope.until)
        .annotate(day=TruncDate("started_at", tzinfo=scope.tz))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in started:
        series["started"][_day(row["day"])] = row["n"]
    finished = (
        rows.filter(finished_at__gte=scope.since, finished_at__lt=scope.until, status__in=FINISHED)
        .annotate(day=TruncDate("finished_at", tzinfo=scope.tz))
        .values("day", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in finished:
        series[row["status"]][_day(row["day"])] = row["n"]
    return series


@dataclass
class StepTiming:
    workflow: str
    step: str
    runs: int
    p50: float  # ms
    p95: float


def slowest_steps(scope: Scope, limit: int = 10) -> list[StepTiming]:
    """Machine steps by their p95 duration (start to finish of the last attempt) over the
    runs finished (completed or failed) in the period: one statement."""
    rows = StepRun.objects.filter(
        scope.instances("instance__"),
        step_type=StepTypeChoices.MACHINE,
        status__in=(StepRunStatus.COMPLETED, StepRunStatus.FAILED),
        finished_at__gte=scope.since,
        finished_at__lt=scope.until,
        started_at__isnull=False,
    ).annotate(
        g_workflow=F("instance__definition__name"),
        g_step=F("step_name"),
        v_ms=MillisBetween("started_at", "finished_at"),
    )
    found = percentiles(rows, ("g_workflow", "g_step"), "v_ms")
    timings = [StepTiming(*p.key, p.count, p.values[50], p.values[95]) for p in found]
    timings.sort(key=lambda t: (-t.p95, -t.p50, t.workflow, t.step))
    return timings[:limit]


@dataclass
class StepFailures:
    workflow: str
    step: str
    failed_runs: int
    failed_instances: int  # now failed at this step, finished in the period


def failing_steps(scope: Scope, limit: int = 10) -> list[StepFailures]:
    """Steps by their runs failed in the period (after their retries), with the number of
    instances failed at them (the ones the dashboard links to): two statements."""
    runs = (
        StepRun.objects.filter(
            scope.instances("instance__"),
            status=StepRunStatus.FAILED,
            finished_at__gte=scope.since,
            finished_at__lt=scope.until,
        )
        .values("instance__definition__name", "step_name")
        .annotate(n=Count("pk"))
        .order_by("-n", "instance__definition__name", "step_name")[:limit]
    )
    instances = (
        WorkflowInstance.objects.filter(
            scope.instances(),
            status=WorkflowStatus.FAILED,
            finished_at__gte=scope.since,
            finished_at__lt=scope.until,
        )
        .values("definition__name", "failed_step")
        .annotate(n=Count("pk"))
        .order_by("-n", "definition__name", "failed_step")[:limit]
    )
    found: dict[tuple[str, str], StepFailures] = {}
    for row in runs:
        key = (row["instance__definition__name"], row["step_name"])
        found[key] = StepFailures(*key, row["n"], 0)
    for row in instances:
        key = (row["definition__name"], row["failed_step"])
        found.setdefault(key, StepFailures(*key, 0, 0)).failed_instances = row["n"]
    ranked = sorted(found.values(), key=lambda f: (-f.failed_runs, -f.failed_instances, f.step))
    return ranked[:limit]


@dataclass
class GroupWaiting:
    group: str  # "" for tasks with no candidate group
    by_age: list[int]  # counts per AGE_BUCKETS
    overdue: int

    @property
    def total(self) -> int:
        return sum(self.by_age)


def waiting_tasks(scope: Scope, now: datetime, limit: int = 15) -> list[GroupWaiting]:
    """Open tasks now (the period does not apply), by candidate group (a task offered to
    two groups counts in both; one with no group under "") and age: one statement."""
    bounds = [lower for _label, lower in AGE_BUCKETS] + [None]
    counts: dict[str, Any] = {}
    for n, (lower, upper) in enumerate(pairwise(bounds)):
        window = Q(created_at__lte=now - lower)
        if upper is not None:
            window &= Q(created_at__gt=now - upper)
        counts[f"age{n}"] = Count("pk", filter=window)
    rows = (
        HumanTask.objects.filter(scope.instances("instance__"), status=TaskStatus.OPEN)
        .values("candidate_groups__name")
        .annotate(total=Count("pk"), overdue=Count("pk", filter=Q(due_at__lt=now)), **counts)
        .order_by("-total", "candidate_groups__name")[:limit]
    )
    return [
        GroupWaiting(
            row["candidate_groups__name"] or "",
            [row[f"age{n}"] for n in range(len(AGE_BUCKETS))],
            row["overdue"],
        )
        for row in rows
    ]


def overdue_tasks(scope: Scope, now: datetime, limit: int = 10) -> list[HumanTask]:
    """The open tasks longest past their due date: one statement."""
    return list(
        HumanTask.objects.filter(scope.instances("instance__"), status=TaskStatus.OPEN)
        .filter(due_at__lt=now)
        .select_related("instance__definition", "assignee")
        .order_by("due_at", "pk")[:limit]
    )


@dataclass
class Backlog:
    ready: int  # queued, runnable now, their instance running
    later: int  # queued for a retry at a later time
    running: int
    oldest_ready: datetime | None  # when the longest-waiting ready run became runnable


def worker_backlog(scope: Scope, now: datetime) -> Backlog:
    """The worker's queue now (the period does not apply): one statement. Runs held
    while their instance is failed are not counted."""
    queued = Q(status=StepRunStatus.QUEUED)
    ready = queued & (Q(due_at__isnull=True) | Q(due_at__lte=now))
    row = StepRun.objects.filter(
        scope.instances("instance__"),
        status__in=(StepRunStatus.QUEUED, StepRunStatus.RUNNING),
        instance__status=WorkflowStatus.RUNNING,
    ).aggregate(
        ready=Count("pk", filter=ready),
        later=Count("pk", filter=queued & Q(due_at__gt=now)),
        running=Count("pk", filter=Q(status=StepRunStatus.RUNNING)),
        oldest=Min("queued_at", filter=ready),
    )
    return Backlog(row["ready"], row["later"], row["running"], row["oldest"])


def queue_delay_per_day(scope: Scope) -> dict[date, Percentiles]:
    """The delay from a machine run becoming runnable to a worker starting it, p50 and
    p95 per local day of its start, over the runs started in the period and finished
    since: one statement."""
    rows = StepRun.objects.filter(
        scope.instances("instance__"),
        step_type=StepTypeChoices.MACHINE,
        started_at__gte=scope.since,
        started_at__lt=scope.until,
        finished_at__gte=scope.since,  # started in the period and finished: the index's
        queued_at__isnull=False,
    ).annotate(
        g_day=TruncDate("started_at", tzinfo=scope.tz),
        v_ms=MillisBetween("queued_at", "started_at"),
    )
    return {_day(p.key[0]): p for p in percentiles(rows, ("g_day",), "v_ms")}


def fill_days(scope: Scope, values: dict[date, Any], default: Any = 0) -> list[Any]:
    """``values`` on every day of the period, in order, ``default`` where missing."""
    return [values.get(day, default) for day in scope.days]


def workflow_names(definitions: Iterable[tuple[int, str]]) -> dict[str, tuple[int, ...]]:
    """{workflow name: its definition version ids}, from (id, name) pairs."""
    names: dict[str, list[int]] = {}
    for pk, name in definitions:
        names.setdefault(name, []).append(pk)
    return {name: tuple(ids) for name, ids in sorted(names.items())}
