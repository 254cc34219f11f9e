"""Aggregates over the workflow tables, for the admin's dashboard: read-only, each one
statement, grouped in the database (never row by row), with a cost bounded whatever
the number of rows where a sort would otherwise grow with them.

- Counts (per day, per step, per group) are grouped counts: a hash aggregate over the
  rows of the period, found through the ``finished_at`` / ``started_at`` indexes.
- The slowest steps' p50 and p95 are exact (interpolated as PostgreSQL's
  ``percentile_cont``) over the most recent ``SAMPLE`` machine runs finished in the
  period: one statement numbers the values of each step in order (``ROW_NUMBER`` and
  ``COUNT`` window functions, SQLite 3.25+ and PostgreSQL alike) and returns only the
  two values around each percentile's position. The same SQL on both databases, so
  they give the same numbers.
- The queue delay per day is estimated from a histogram (``DELAY_BUCKETS``): the runs
  counted per day and bucket, the percentile interpolated inside its bucket, as
  Prometheus's ``histogram_quantile`` does; no sort at all.
- Durations are milliseconds computed in SQL (``date_part('epoch', ...)`` on PostgreSQL,
  ``julianday`` on SQLite, exact to well under a millisecond), rounded to milliseconds.
- Local days: ``AT TIME ZONE`` on PostgreSQL (Django's ``TruncDate``); on SQLite,
  ``date()`` shifted by the zone's UTC offset, one offset per stretch between the
  zone's changes (DST) in the period: no Python function called per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cached_property
from itertools import pairwise
from typing import Any

from django.db import connection
from django.db.models import Count, DateField, F, FloatField, Func, Min, Q, QuerySet
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
#: The slowest steps' percentiles are over at most this many runs, the most recent.
SAMPLE = 10_000
#: Upper bounds (ms) of the queue delay histogram's buckets; the last one is open.
DELAY_BUCKETS = (
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10_000,
    30_000,
    60_000,
    300_000,
    900_000,
    3_600_000,
)


class MillisBetween(Func):
    """``end - start`` in milliseconds, as a float, in SQL."""

    output_field = FloatField()
    arity = 2

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # PostgreSQL
        start, end = (compiler.compile(e) for e in self.source_expressions)
        sql = f"(date_part('epoch', {end[0]} - {start[0]}) * 1000.0)"  # float8, not numeric
        return sql, (*end[1], *start[1])

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        start, end = (compiler.compile(e) for e in self.source_expressions)
        sql = f"((julianday({end[0]}) - julianday({start[0]})) * 86400000.0)"
        return sql, (*end[1], *start[1])


class LocalDate(Func):
    """The date of a datetime column in ``scope``'s time zone (see the module)."""

    output_field = DateField()

    def __init__(self, expression: str, scope: Scope) -> None:
        super().__init__(F(expression))
        self.scope = scope

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        truncated = TruncDate(self.source_expressions[0], tzinfo=self.scope.tz)
        return compiler.compile(truncated)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        column, params = compiler.compile(self.source_expressions[0])
        stretches = self.scope.stretches
        if stretches == [(stretches[0][0], 0)]:  # UTC: the stored text's first ten
            return f"substr({column}, 1, 10)", params
        if len(stretches) == 1:
            return f"date({column}, %s)", (*params, f"{stretches[0][1]:+d} seconds")
        cases, args = [], []
        for until, seconds in stretches[:-1]:
            cases.append(f"WHEN {column} < %s THEN %s")
            args += [
                *params,
                connection.ops.adapt_datetimefield_value(until),
                f"{seconds:+d} seconds",
            ]
        sql = f"date({column}, CASE {' '.join(cases)} ELSE %s END)"
        return sql, (*params, *args, f"{stretches[-1][1]:+d} seconds")


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

    @cached_property
    def stretches(self) -> list[tuple[datetime, int]]:
        return self.offsets()

    def offsets(self) -> list[tuple[datetime, int]]:
        """The zone's UTC offsets (seconds) in the period, a day either side: each one
        with the instant it stops (the last one's is the period's end)."""
        # In UTC: arithmetic on datetimes of a zone is wall-clock arithmetic.
        step, at = timedelta(hours=1), self.since.astimezone(UTC) - timedelta(days=1)
        end = self.until.astimezone(UTC) + timedelta(days=1)

        def offset(moment: datetime) -> int:
            return int(moment.astimezone(self.tz).utcoffset().total_seconds())  # type: ignore[union-attr]

        found = [(at, offset(at))]
        while at < end:
            at = min(at + step, end)
            if offset(at) != found[-1][1]:
                low = at - step  # the change is in (low, at]: to the minute
                while at - low > timedelta(minutes=1):
                    middle = low + (at - low) / 2
                    low, at = (middle, at) if offset(middle) == found[-1][1] else (low, middle)
                found.append((at, offset(at)))
        return [(nxt[0], off) for (_s, off), nxt in zip(found, [*found[1:], (end, 0)], strict=True)]

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
        .annotate(day=LocalDate("started_at", scope))
        .values("day")
        .annotate(n=Count("*"))
        .order_by()
    )
    for row in started:
        series["started"][_day(row["day"])] = row["n"]
    finished = (
        rows.filter(finished_at__gte=scope.since, finished_at__lt=scope.until, status__in=FINISHED)
        .annotate(day=LocalDate("finished_at", scope))
        .values("day", "status")
        .annotate(n=Count("*"))
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
    runs finished (completed or failed) in the period, the last ``SAMPLE``: one statement."""
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
    rows = rows.values("g_workflow", "g_step", "v_ms").order_by("-finished_at")[:SAMPLE]
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
        .annotate(n=Count("*"))
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
        .annotate(n=Count("*"))
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
        # Two arms, each matched by a partial index (dwf_run_queued, dwf_run_lease).
        queued | Q(status=StepRunStatus.RUNNING),
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
    p95 per local day of its start, estimated from a histogram (see the module), over
    the runs started in the period and finished since: one statement."""
    rows = StepRun.objects.filter(
        scope.instances("instance__"),
        step_type=StepTypeChoices.MACHINE,
        started_at__gte=scope.since,
        started_at__lt=scope.until,
        finished_at__gte=scope.since,  # started in the period and finished: the index's
        queued_at__isnull=False,
    ).annotate(g_day=LocalDate("started_at", scope), v_ms=MillisBetween("queued_at", "started_at"))
    inner, params = rows.values("g_day", "v_ms").order_by().query.sql_with_params()
    cases = " ".join(f"WHEN v_ms <= {le} THEN {n}" for n, le in enumerate(DELAY_BUCKETS))
    sql = (
        f"SELECT g_day, CASE {cases} ELSE {len(DELAY_BUCKETS)} END AS bucket, COUNT(*) "  # noqa: S608
        f"FROM (SELECT g_day, ROUND(v_ms) AS v_ms FROM ({inner}) AS dwf_raw) AS dwf_delays "
        "GROUP BY 1, 2"  # whole milliseconds: the same bucket on every database
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    days: dict[date, list[int]] = {}
    for day, bucket, n in fetched:
        days.setdefault(_day(day), [0] * (len(DELAY_BUCKETS) + 1))[int(bucket)] = int(n)
    return {day: histogram_percentiles(day, counts) for day, counts in days.items()}


def histogram_percentiles(key: Any, counts: list[int]) -> Percentiles:
    """PERCENTILES from the counts of DELAY_BUCKETS (and the open one past them)."""
    total = sum(counts)
    values = {}
    for p in PERCENTILES:
        rank, seen = p / 100 * total, 0
        for n, count in enumerate(counts):
            if count and seen + count >= rank:
                if n == len(DELAY_BUCKETS):  # the open bucket: its lower bound
                    values[p] = float(DELAY_BUCKETS[-1])
                else:
                    low = DELAY_BUCKETS[n - 1] if n else 0
                    values[p] = round(low + (DELAY_BUCKETS[n] - low) * (rank - seen) / count)
                break
            seen += count
    return Percentiles((key,), total, values)


def fill_days(scope: Scope, values: dict[date, Any], default: Any = 0) -> list[Any]:
    """``values`` on every day of the period, in order, ``default`` where missing."""
    return [values.get(day, default) for day in scope.days]


def workflow_names(definitions: Iterable[tuple[int, str]]) -> dict[str, tuple[int, ...]]:
    """{workflow name: its definition version ids}, from (id, name) pairs."""
    names: dict[str, list[int]] = {}
    for pk, name in definitions:
        names.setdefault(name, []).append(pk)
    return {name: tuple(ids) for name, ids in sorted(names.items())}
