"""The dashboard: its aggregates on known rows (the same numbers on SQLite and
PostgreSQL), its permission, bad input, and a statement count that does not grow."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_workflows import stats
from django_workflows.admin.charts import nice_ticks
from django_workflows.models import (
    DefinitionVersion,
    HumanTask,
    HumanTaskGroup,
    StepRun,
    WorkflowInstance,
)

from ..factories import StaffFactory, UserFactory
from .conftest import grant

DAY = date(2026, 11, 10)
NOON = datetime(2026, 11, 10, 12, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
URL = "/admin/django_workflows/dashboard/"


def definition(name, version="1"):
    return DefinitionVersion.objects.create(
        name=name, version=version, graph={"steps": {}}, checksum="x"
    )


def instance(row, status="completed", started=NOON, finished=None, failed_step=""):
    made = WorkflowInstance.objects.create(definition=row, status=status, failed_step=failed_step)
    WorkflowInstance.objects.filter(pk=made.pk).update(started_at=started, finished_at=finished)
    return made


def run(owner, step, status="completed", started=None, seconds=None, queued=None, **fields):
    finished = started + timedelta(seconds=seconds) if seconds is not None else None
    made = StepRun.objects.create(
        instance=owner, step_name=step, step_type=fields.pop("step_type", "machine"), status=status
    )
    StepRun.objects.filter(pk=made.pk).update(
        started_at=started, finished_at=finished, queued_at=queued, **fields
    )
    return made


def task(owner, groups=(), age=timedelta(0), due=None, now=NOW, title="T"):
    step = run(owner, "review", status="waiting", step_type="human")
    made = HumanTask.objects.create(instance=owner, step_run=step, step_name="review", title=title)
    HumanTask.objects.filter(pk=made.pk).update(created_at=now - age, due_at=due)
    for name in groups:
        HumanTaskGroup.objects.create(task=made, name=name)
    return made


@pytest.fixture
def rows(db):
    """Two workflows (billing in two versions), known runs, failures and tasks."""
    billing1, billing2, onboarding = definition("billing"), definition("billing", "2"), None
    onboarding = definition("onboarding")
    day2 = NOON + timedelta(days=1)
    done = [instance(billing1, finished=day2), instance(billing2, finished=day2)]
    failed = instance(billing2, "failed", finished=day2, failed_step="charge")
    late = instance(onboarding, "running", started=day2)
    for seconds, owner in zip((1, 2, 3, 4), (*done, failed, done[0]), strict=True):
        run(owner, "charge", started=NOON, seconds=seconds)
    run(failed, "charge", "failed", started=NOON, seconds=10)
    run(done[1], "charge", "failed", started=NOON, seconds=10, step_type="human")  # not machine
    run(late, "send", started=day2, seconds=0.5)
    # Queue delays on DAY: 100 ms and 300 ms.
    for ms in (100, 300):
        run(done[0], "ship", started=NOON, seconds=1, queued=NOON - timedelta(milliseconds=ms))
    # The worker's queue now: 2 ready (one due), 1 later, 1 running; 1 held (instance failed).
    run(late, "a", "queued", queued=NOW - timedelta(minutes=5))
    run(late, "b", "queued", queued=NOW - timedelta(minutes=1), due_at=NOW - timedelta(seconds=1))
    run(late, "c", "queued", queued=NOW, due_at=NOW + timedelta(hours=1))
    run(late, "d", "running", started=NOW)
    run(failed, "e", "queued", queued=NOW - timedelta(days=1))
    # Tasks waiting now: managers 3 (one overdue), finance 1, one with no group.
    task(late, ["managers"], timedelta(minutes=30))
    task(late, ["managers"], timedelta(hours=2))
    overdue = task(late, ["managers", "finance"], timedelta(days=5), due=NOW - timedelta(days=1))
    task(late, [], timedelta(days=10))
    return {"billing": (billing1.pk, billing2.pk), "onboarding": (onboarding.pk,), "late": overdue}


def scope(workflow=None, ids=None):
    return stats.Scope(DAY, DAY + timedelta(days=2), ids, tz=UTC)


def test_instances_per_day(rows):
    series = stats.instances_per_day(scope())
    assert series["started"] == {DAY: 3, DAY + timedelta(days=1): 1}
    assert series["completed"] == {DAY + timedelta(days=1): 2}
    assert series["failed"] == {DAY + timedelta(days=1): 1}
    only = stats.instances_per_day(stats.Scope(DAY, DAY, rows["onboarding"], tz=UTC))
    assert only["started"] == {}


def test_slowest_steps_percentiles_interpolate_like_percentile_cont(rows):
    timings = stats.slowest_steps(scope())
    by_step = {(t.workflow, t.step): t for t in timings}
    charge = by_step["billing", "charge"]
    # 1, 2, 3, 4, 10 s: the median 3 s; p95 at position 3.8: 4 s + 0.8 x 6 s.
    assert (charge.runs, charge.p50, charge.p95) == (5, 3000, 8800)
    assert (by_step["onboarding", "send"].p50, by_step["onboarding", "send"].p95) == (500, 500)
    assert timings[0].step == "charge"  # the slowest first
    assert ("billing", "review") not in by_step  # human runs are not machine steps


def test_failing_steps_count_runs_and_failed_instances(rows):
    failures = stats.failing_steps(scope())
    assert [(f.workflow, f.step, f.failed_runs, f.failed_instances) for f in failures] == [
        ("billing", "charge", 2, 1)
    ]
    assert stats.failing_steps(stats.Scope(DAY, DAY, rows["onboarding"], tz=UTC)) == []


def test_waiting_tasks_by_group_and_age(rows):
    groups = {g.group: g for g in stats.waiting_tasks(scope(), NOW)}
    assert groups["managers"].by_age == [1, 1, 0, 1, 0]
    assert groups["managers"].overdue == 1
    assert (groups["finance"].by_age, groups["finance"].overdue) == ([0, 0, 0, 1, 0], 1)
    assert groups[""].by_age == [0, 0, 0, 0, 1]
    assert [t.pk for t in stats.overdue_tasks(scope(), NOW)] == [rows["late"].pk]


def test_worker_backlog_and_queue_delay(rows):
    backlog = stats.worker_backlog(scope(), NOW)
    assert (backlog.ready, backlog.later, backlog.running) == (2, 1, 1)
    assert backlog.oldest_ready == NOW - timedelta(minutes=5)
    delays = stats.queue_delay_per_day(scope())
    assert delays[DAY].count == 2
    # Estimated from the histogram: 100 ms is the top of (50, 100]; p95 is 90% into (250, 500].
    assert delays[DAY].values == {50: 100, 95: 475}
    assert stats.queue_delay_per_day(stats.Scope(DAY, DAY, rows["onboarding"], tz=UTC)) == {}


def test_nice_ticks():
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(100) == [0, 25, 50, 75, 100]


# -- the page ----------------------------------------------------------------------------


def get(client, user, query=""):
    client.force_login(user)
    return client.get(URL + query)


def test_the_page_needs_view_dashboard(client, rows):
    assert get(client, UserFactory(username="plain"), "").status_code == 302  # not staff: login
    assert get(client, StaffFactory(username="bare"), "").status_code == 403
    viewer = grant(StaffFactory(username="viewer"), "view_workflowinstance")
    assert get(client, viewer, "").status_code == 403
    allowed = get(client, grant(StaffFactory(username="ops"), "view_dashboard"))
    assert allowed.status_code == 200
    page = allowed.content.decode()
    for chart in ("per-day", "slowest", "failing", "waiting", "worker"):
        assert f'id="dwf-{chart}"' in page
    assert page.count('role="img"') == 5


def test_the_index_links_the_dashboard_for_who_may_see_it(client, rows):
    ops = grant(StaffFactory(username="ops"), "view_dashboard")
    client.force_login(ops)
    assert f'href="{URL}"' in client.get("/admin/").content.decode()
    client.force_login(StaffFactory(username="bare"))
    assert f'href="{URL}"' not in client.get("/admin/").content.decode()


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?start=2026-11-10&end=2026-11-01", "must start before it ends"),
        ("?start=2020-01-01&end=2026-11-01", "at most 366 days"),
        ("?start=yesterday", "Enter a valid date"),
        ("?workflow=nope", "Select a valid choice"),
    ],
)
def test_bad_input_is_a_form_error(client, rows, query, error):
    response = get(client, grant(StaffFactory(username="ops"), "view_dashboard"), query)
    assert response.status_code == 200
    page = response.content.decode()
    assert error in page
    assert 'role="img"' not in page


def test_a_workflow_and_period_filter_the_page_and_link_the_failed_instances(client, rows):
    ops = grant(StaffFactory(username="ops", is_superuser=True), "view_dashboard")
    page = get(client, ops, "?start=2026-11-10&end=2026-11-12&workflow=billing").content.decode()
    assert "charge (billing)" in page
    assert "send (onboarding)" not in page
    link = reverse("admin:django_workflows_workflowinstance_changelist")
    start = page.index(f'href="{link}?status__exact=failed')
    href = page[start + 6 : page.index('"', start + 6)].replace("&amp;", "&")
    listed = client.get(href)
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == list(
        WorkflowInstance.objects.filter(status="failed")
    )


def statements(client, user):
    client.force_login(user)
    client.get(URL)  # warm: the session, the content types
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(URL).status_code == 200
    return len(ctx.captured_queries)


def test_the_statements_do_not_grow_with_the_rows(client, rows):
    ops = grant(StaffFactory(username="ops"), "view_dashboard")
    before = statements(client, ops)
    billing = DefinitionVersion.objects.get(name="billing", version="1")
    now = datetime.now(UTC)
    for n in range(20):
        owner = instance(billing, "failed", started=now, finished=now, failed_step=f"s{n}")
        run(owner, f"s{n}", "failed", started=now, seconds=n)
        task(owner, [f"group{n}"], due=now - timedelta(days=1))
    assert statements(client, ops) == before
    assert before <= 16  # session, user, 2 permissions, "My tasks (N)" 2, definitions, 9


def test_local_days_follow_the_zone_across_a_dst_change(db):
    """Paris left summer time on 2026-10-25 at 01:00 UTC: +2 h before, +1 h after."""
    paris = ZoneInfo("Europe/Paris")
    row = definition("billing")
    for started in ("2026-10-24T22:30", "2026-10-25T22:30", "2026-10-25T23:30"):
        instance(row, started=datetime.fromisoformat(started).replace(tzinfo=UTC))
    period = stats.Scope(date(2026, 10, 24), date(2026, 10, 27), tz=paris)
    change = datetime(2026, 10, 25, 1, tzinfo=UTC)
    assert [offset for _until, offset in period.offsets()] == [7200, 3600]
    assert period.offsets()[0][0] == change
    started = stats.instances_per_day(period)["started"]
    assert started == {date(2026, 10, 25): 2, date(2026, 10, 26): 1}
