"""The fast path of a chained machine step (``engine.chained``, ``engine.sql.fastpath``,
``engine.sql.lock``).

Finishing a machine step whose edges lead on, unconditionally, to machine steps that
are not joins (or that ends its workflow) writes the run's fenced update, the next runs,
the events and the instance in SQL built once: one statement on PostgreSQL, four on
SQLite. These tests run each workflow once with the fast path and once with the ORM's
writes and compare every row, the events the bus got and the raw JSON stored; and they
show that a lost lease writes nothing, that the fast path is not taken where it would
differ (joins, human steps, a failed step, ``save`` signals), and what a step costs.

The review's part (the second half): a lost lease writes nothing also when the lease is
taken over while the statement waits for the instance's lock, cancel discards a running
step's result, concurrent parallel branches lose nothing, an error raised at COMMIT
leaves Django's connection as a failed commit would, server-side binding falls back, a
step that closes the connection, and the per-connection caches. They run on SQLite and
PostgreSQL (the unlocked statement on PostgreSQL only).
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
import weakref
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import signals
from django.db.models.functions import Now
from django.db.transaction import TransactionManagementError
from django.db.utils import load_backend
from django.test.utils import CaptureQueriesContext, override_settings

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    InMemoryEventBus,
    LocalExecutionEngine,
    RetryPolicy,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.engine import ClaimedRun, chained
from django_workflows.engine.sql import fastpath
from django_workflows.engine.transition import lock_instance
from django_workflows.models import (
    StepRun,
    StepRunStatus,
    WorkflowEvent,
    WorkflowInstance,
)

from ..helpers import TIMEOUT, QueueingEngine, in_threads

TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")


class Put(BaseMachineStep):
    """Sets ``<step>`` to a value with every kind of JSON in it."""

    retry = RetryPolicy(max_attempts=3)

    def execute(self, context):
        context.set(
            context.step_name,
            {
                "attempt": context.attempt,
                "text": "naïve “quotes” \\ \u2603 \n",
                "float": 0.1,
                "big": 2**62,
                "none": None,
                "list": [1, "two", {"three": [True, False]}],
            },
        )


class Grow(BaseMachineStep):
    """Grows the context past ``MAX_CONTEXT_BYTES`` (set low by the test)."""

    def execute(self, context):
        context.set("blob", "x" * 5000)


class Approve(BaseHumanStep):
    title = "Approve"


def chain(n: int = 4, name: str = "fast_chain") -> WorkflowDefinition:
    return WorkflowDefinition(
        name=name,
        version="1",
        initial_step="s1",
        steps={f"s{i}": Put() for i in range(1, n + 1)},
        edges=[Edge(f"s{i}", f"s{i + 1}") for i in range(1, n)],
    )


def definitions() -> list[WorkflowDefinition]:
    return [
        chain(),
        WorkflowDefinition(  # a fan-out of machine steps from a machine step, then a join
            name="fast_fan",
            version="1",
            initial_step="start",
            steps={"start": Put(), "a": Put(), "b": Put(), "join": Put(), "end": Put()},
            edges=[
                Edge("start", "a"),
                Edge("start", "b"),
                Edge("a", "join"),
                Edge("b", "join"),
                Edge("join", "end"),
            ],
        ),
        WorkflowDefinition(  # a machine step before a human one, and one after it
            name="fast_human",
            version="1",
            initial_step="s1",
            steps={"s1": Put(), "ok": Approve(), "s2": Put()},
            edges=[Edge("s1", "ok"), Edge("ok", "s2")],
        ),
        WorkflowDefinition(
            name="fast_grow",
            version="1",
            initial_step="s1",
            steps={"s1": Put(), "s2": Grow(), "s3": Put()},
            edges=[Edge("s1", "s2"), Edge("s2", "s3")],
        ),
    ]


@pytest.fixture
def fast_registry():
    reg = WorkflowRegistry()
    for definition in definitions():
        reg.register_definition(definition)
    return reg


class Spy:
    """Counts the calls of ``fastpath.finish`` (and lets them through)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = fastpath.finish

        def finish(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(fastpath, "finish", finish)


@pytest.fixture
def spy(monkeypatch):
    return Spy(monkeypatch)


def no_fast_path(monkeypatch):
    monkeypatch.setattr(chained, "applies", lambda *args: False)


def rows(instance_id) -> dict:
    """Everything a transition writes, without what differs between two runs (ids,
    times, lease tokens, the worker's pid is the same process)."""
    instance = WorkflowInstance.objects.get(pk=instance_id)
    with connection.cursor() as cursor:  # the JSON as stored, not as decoded
        table = connection.ops.quote_name(WorkflowInstance._meta.db_table)
        cast = "::text" if connection.vendor == "postgresql" else ""
        cursor.execute(
            f"SELECT context{cast}, current_steps{cast}, tokens{cast} FROM {table} "  # noqa: S608
            "WHERE id = %s",
            [WorkflowInstance._meta.pk.get_db_prep_value(instance.pk, connection)],
        )
        raw = cursor.fetchone()
    runs = list(
        StepRun.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values(
            "step_name",
            "step_type",
            "status",
            "attempt",
            "max_attempts",
            "lease_token",
            "worker",
            "due_at",
            "input",
            "changes",
            "error",
            "traceback",
        )
    )
    times = list(
        StepRun.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values_list("queued_at", "started_at", "finished_at", "lease_expires_at", "created_at")
    )
    events = [
        (type_, step_name, without_ids(payload))
        for type_, step_name, payload in WorkflowEvent.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values_list("type", "step_name", "payload")
    ]
    return {
        "status": instance.status,
        "context": instance.context,
        "current_steps": instance.current_steps,
        "tokens": instance.tokens,
        "failed_step": instance.failed_step,
        "error": instance.error.splitlines()[:1],
        "finished": instance.finished_at is not None,
        "raw": raw,
        "runs": runs,
        # Which times are set (the values differ between runs).
        "times": [tuple(value is not None for value in row) for row in times],
        "events": events,
    }


def without_ids(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "task_id"}  # a human task's row id


def bus_events(bus: InMemoryEventBus) -> list[tuple]:
    return [
        (e.type, getattr(e, "step_name", ""), without_ids(e.payload()), e.instance_id != "")
        for e in bus.events
    ]


def run_both(monkeypatch, registry, name: str, **kwargs):
    """Start ``name`` with the fast path, then with the ORM's writes: both results."""
    results = []
    for fast in (True, False):
        with monkeypatch.context() as m:
            if not fast:
                no_fast_path(m)
            bus = InMemoryEventBus()
            engine = LocalExecutionEngine(registry, event_bus=bus)
            instance = engine.start_workflow(name, **kwargs)
            results.append((rows(instance.pk), bus_events(bus), instance))
    return results


@pytest.mark.django_db(transaction=True)
def test_a_chain_takes_the_fast_path_and_writes_what_the_orm_writes(
    monkeypatch, fast_registry, spy
):
    (fast, fast_bus, fast_instance), (orm, orm_bus, _) = run_both(
        monkeypatch, fast_registry, "fast_chain", initial_data={"n": 1}
    )
    assert spy.calls == 4  # s1..s3 route on, s4 ends the workflow
    assert fast == orm
    assert fast_bus == orm_bus
    assert fast["status"] == WorkflowStatus.COMPLETED
    assert [run["status"] for run in fast["runs"]] == ["completed"] * 4
    assert fast["times"] == [(True, True, True, True, True)] * 4
    assert [e[0] for e in fast["events"]][-1] == "WorkflowCompleted"
    # Every step saw the context of the step before it.
    assert fast["runs"][3]["input"]["s3"]["attempt"] == 1
    assert fast_instance.context["s4"]["text"] == "naïve “quotes” \\ \u2603 \n"


@pytest.mark.django_db(transaction=True)
def test_a_fan_out_and_join_write_what_the_orm_writes(monkeypatch, fast_registry, spy):
    (fast, fast_bus, _), (orm, orm_bus, _) = run_both(monkeypatch, fast_registry, "fast_fan")
    assert spy.calls == 3  # start (two runs at once), join and end; not a and b (a join)
    assert fast == orm
    assert fast_bus == orm_bus
    assert [run["step_name"] for run in fast["runs"]] == ["start", "a", "b", "join", "end"]
    assert fast["status"] == WorkflowStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_human_step_next_takes_the_orm_path(monkeypatch, fast_registry, spy):
    (fast, fast_bus, _), (orm, orm_bus, _) = run_both(monkeypatch, fast_registry, "fast_human")
    assert spy.calls == 0
    assert fast == orm
    assert fast_bus == orm_bus
    assert fast["status"] == WorkflowStatus.WAITING


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_WORKFLOWS={"MAX_CONTEXT_BYTES": 2000})
def test_a_step_that_fails_while_routing_on_fails_as_on_the_orm_path(
    monkeypatch, fast_registry, spy
):
    (fast, fast_bus, _), (orm, orm_bus, _) = run_both(monkeypatch, fast_registry, "fast_grow")
    assert spy.calls == 1  # s1 only: s2's context is too large, it fails without the CTE
    assert fast == orm
    assert fast_bus == orm_bus
    assert fast["status"] == WorkflowStatus.FAILED
    assert fast["failed_step"] == "s2"
    assert [run["status"] for run in fast["runs"]] == ["completed", "failed"]
    assert fast["runs"][1]["error"].startswith("ContextError")


@pytest.mark.django_db
def test_statements_per_chained_step(fast_registry, spy):
    engine = LocalExecutionEngine(fast_registry)
    engine.start_workflow("fast_chain")  # warm: the definition row, the SQL cache
    with CaptureQueriesContext(connection) as four:
        engine.start_workflow("fast_chain")
    reg = WorkflowRegistry()
    reg.register_definition(chain(1, "fast_one"))
    one_engine = LocalExecutionEngine(reg)
    one_engine.start_workflow("fast_one")
    with CaptureQueriesContext(connection) as one:
        one_engine.start_workflow("fast_one")
    statements = [
        q["sql"] for q in four.captured_queries if not q["sql"].upper().startswith(TX_CONTROL)
    ]
    n_one = sum(not q["sql"].upper().startswith(TX_CONTROL) for q in one.captured_queries)
    per_step = (len(statements) - n_one) / 3
    if connection.vendor == "postgresql":
        # One statement: it locks the instance, checks that it is as the worker left
        # it, and writes (the start's transition locked it; the chain's steps do not).
        assert per_step == 1
        assert sum(sql.startswith("WITH locked AS") for sql in statements) == 4
    else:
        assert per_step == 5  # the lock, then the run, the runs, the events, the instance
    assert spy.calls == 2 * 4 + 2 * 1  # every step, each workflow started twice


@pytest.fixture
def qengine(fast_registry):
    return QueueingEngine(fast_registry)


def state(instance_id):
    """The rows as they are, times and tokens included: a write of any kind shows."""
    instance = WorkflowInstance.objects.filter(pk=instance_id).values().get()
    runs = list(StepRun.objects.filter(instance_id=instance_id).order_by("id").values())
    events = list(WorkflowEvent.objects.filter(instance_id=instance_id).order_by("id").values())
    return instance, runs, events


def take_over(engine, run_id):
    """Claim ``run_id``; its lease expires and another worker claims it. Returns the first
    worker's (run, token), now stale."""
    run, token = engine.claim(run_id)
    StepRun.objects.filter(pk=run_id).update(lease_expires_at=Now() - timedelta(seconds=1))
    assert engine.recover_expired_leases() == 1
    assert engine.take() == [run_id]
    assert engine.claim(run_id) is not None
    return run, token


@pytest.mark.django_db
@pytest.mark.parametrize("claim_next", [False, True])
def test_a_lost_lease_writes_nothing(qengine, spy, caplog, claim_next):
    instance = qengine.start_workflow("fast_chain")
    (run_id,) = qengine.take()
    run, token = take_over(qengine, run_id)
    before = state(instance.pk)
    runnable, claimed = qengine.finish(
        ClaimedRun(run, token), {"s1": "late"}, claim_next=claim_next
    )
    assert (runnable, claimed) == ([], None)
    assert spy.calls == 1  # the fast path tried, and its fence held nothing
    assert state(instance.pk) == before
    assert "lost its lease" in caplog.text


@pytest.mark.django_db
def test_a_random_token_writes_nothing(qengine, spy):
    instance = qengine.start_workflow("fast_chain")
    (run_id,) = qengine.take()
    run, _token = qengine.claim(run_id)
    before = state(instance.pk)
    assert qengine.finish(ClaimedRun(run, uuid.uuid4()), {"s1": "forged"}).runnable == []
    assert state(instance.pk) == before
    assert spy.calls == 1


@pytest.mark.django_db
def test_a_canceled_instance_discards_the_result_without_the_fast_path(qengine, spy):
    instance = qengine.start_workflow("fast_chain")
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    qengine.cancel_workflow(instance.pk)
    before = state(instance.pk)
    assert qengine.finish(ClaimedRun(run, token), {"s1": "late"}).runnable == []
    # On PostgreSQL the worker's unlocked statement finds the instance changed and
    # writes nothing; locked, the instance is canceled: the ORM's path discards it.
    assert spy.calls == (1 if connection.vendor == "postgresql" else 0)
    after = state(instance.pk)
    assert after[1:] == before[1:]  # runs and events
    assert after[0]["status"] == WorkflowStatus.CANCELED


@pytest.mark.django_db
def test_an_instance_changed_since_the_worker_read_it_is_planned_again(qengine, spy):
    instance = qengine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    # Meanwhile another transaction changes what the plan is made from.
    WorkflowInstance.objects.filter(pk=instance.pk).update(context={"n": 2, "other": True})
    runnable, claimed = qengine.finish(ClaimedRun(run, token), {"s1": 1}, claim_next=True)
    assert runnable == [] and claimed is not None
    # PostgreSQL: the unlocked statement wrote nothing, the locked fast path did it.
    assert spy.calls == (2 if connection.vendor == "postgresql" else 1)
    instance.refresh_from_db()
    assert instance.context == {"n": 2, "other": True, "s1": 1}
    next_run, _token = claimed
    assert StepRun.objects.get(pk=next_run.pk).input == {"n": 2, "other": True, "s1": 1}
    assert next_run.input == {"n": 2, "other": True, "s1": 1}
    events = list(
        WorkflowEvent.objects.filter(instance_id=instance.pk).values_list("type", "step_name")
    )
    assert events == [("WorkflowStarted", ""), ("StepExecuted", "s1")]


@pytest.mark.django_db
def test_the_finished_run_and_the_claimed_next_one(qengine, spy):
    instance = qengine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    runnable, claimed = qengine.finish(ClaimedRun(run, token), {"s1": 1}, claim_next=True)
    assert runnable == [] and spy.calls == 1
    next_run, next_token = claimed
    stored = StepRun.objects.get(pk=next_run.pk)
    assert stored.step_name == "s2" and stored.status == StepRunStatus.RUNNING
    assert stored.lease_token == next_token and stored.attempt == 1
    assert stored.input == {"n": 1, "s1": 1}
    assert stored.lease_expires_at > stored.started_at
    assert StepRun.objects.get(pk=run_id).lease_token is None
    # The claimed run goes on like any other.
    assert qengine.finish(ClaimedRun(next_run, next_token), {"s2": 2}).runnable == [next_run.pk + 1]
    assert spy.calls == 2
    instance.refresh_from_db()
    assert instance.context == {"n": 1, "s1": 1, "s2": 2}
    assert instance.current_steps == ["s3"]
    assert instance.status == WorkflowStatus.RUNNING


@pytest.mark.django_db
def test_a_save_signal_receiver_turns_the_fast_path_off(fast_registry, spy):
    saved = []

    def receiver(sender, instance, **kwargs):
        saved.append(instance.status)

    signals.post_save.connect(receiver, sender=WorkflowInstance)
    try:
        LocalExecutionEngine(fast_registry).start_workflow("fast_chain")
    finally:
        signals.post_save.disconnect(receiver, sender=WorkflowInstance)
    assert spy.calls == 0
    # The start inserts the instance once, as its plan leaves it; then one save per step.
    assert saved[-1] == WorkflowStatus.COMPLETED and len(saved) == 5  # start, 4 steps


@pytest.mark.django_db
def test_the_fast_path_is_taken_on_both_databases(fast_registry, spy):
    instance = LocalExecutionEngine(fast_registry).start_workflow("fast_chain")
    assert instance.status == WorkflowStatus.COMPLETED
    assert spy.calls == 4


def statements_of(fn) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        fn()
    return [q["sql"] for q in captured.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_postgresql_commits_with_the_writes_outside_a_callers_transaction(fast_registry, spy):
    bus = InMemoryEventBus()
    engine = LocalExecutionEngine(fast_registry, event_bus=bus)
    sqls = statements_of(lambda: engine.start_workflow("fast_chain"))
    steps = [i for i, sql in enumerate(sqls) if sql.startswith("WITH locked AS")]
    if connection.vendor == "postgresql":
        # Each step is one statement outside any transaction block: it commits by
        # itself, with no BEGIN before it and no COMMIT after it or in it.
        assert len(steps) == 4
        for i in steps:
            assert sqls[i - 1] != "BEGIN" and not sqls[i].endswith("COMMIT")
            assert i + 1 == len(sqls) or sqls[i + 1] != "COMMIT"
    else:
        assert steps == []
    assert spy.calls == 4
    assert not connection.in_atomic_block
    # Committed: another connection sees it; the events went out after commit.
    (instance,) = WorkflowInstance.objects.all()
    assert instance.status == WorkflowStatus.COMPLETED
    assert [e.type for e in bus.events][-1] == "WorkflowCompleted"
    assert len(bus.events) == 1 + 4 + 1


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_nothing_commits_early(qengine, spy):
    instance = qengine.start_workflow("fast_chain")
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    before = state(instance.pk)

    sqls = []

    def in_a_block_that_rolls_back():
        with transaction.atomic():
            sqls.extend(statements_of(lambda: qengine.finish(ClaimedRun(run, token), {"s1": 1})))
            transaction.set_rollback(True)

    in_a_block_that_rolls_back()
    assert sqls
    assert not any(sql.endswith("; COMMIT") for sql in sqls)
    assert spy.calls == 1
    assert state(instance.pk) == before  # all of it rolled back with the caller's block


@pytest.mark.django_db(transaction=True)
def test_a_lost_lease_writes_nothing_when_the_statement_commits(qengine, spy, caplog):
    instance = qengine.start_workflow("fast_chain")
    (run_id,) = qengine.take()
    run, token = take_over(qengine, run_id)
    before = state(instance.pk)
    assert qengine.finish(ClaimedRun(run, token), {"s1": "late"}, claim_next=True) == ([], None)
    assert spy.calls == 1
    assert state(instance.pk) == before
    assert not connection.in_atomic_block
    assert "lost its lease" in caplog.text


# -- the review ----------------------------------------------------------------------

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the unlocked statement is PostgreSQL's"
)


class CloseConnection(BaseMachineStep):
    """Closes this thread's connection, as a step calling close_old_connections() may."""

    def execute(self, context):
        connections["default"].close()
        context.set(context.step_name, True)


def parallel() -> WorkflowDefinition:
    """start -> a -> a2 and start -> b -> b2: two branches, no join."""
    return WorkflowDefinition(
        name="fast_parallel",
        version="1",
        initial_step="start",
        steps={name: Put() for name in ("start", "a", "a2", "b", "b2")},
        edges=[Edge("start", "a"), Edge("start", "b"), Edge("a", "a2"), Edge("b", "b2")],
    )


def closing_chain() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="fast_closing",
        version="1",
        initial_step="c1",
        steps={f"c{i}": CloseConnection() for i in range(1, 4)},
        edges=[Edge("c1", "c2"), Edge("c2", "c3")],
    )


@pytest.fixture
def review_registry():
    reg = WorkflowRegistry()
    for definition in [*definitions(), parallel(), closing_chain()]:
        reg.register_definition(definition)
    return reg


@pytest.fixture
def review_engine(review_registry):
    return QueueingEngine(review_registry, event_bus=InMemoryEventBus())


def pk_param(instance_id):
    return WorkflowInstance._meta.pk.get_db_prep_value(instance_id, connection)


def inst_table():
    return connection.ops.quote_name(WorkflowInstance._meta.db_table)


def waiting_on_locks(cursor) -> int:
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    return cursor.fetchone()[0]


def hold_the_instance(instance_id, n_waiters, then=None):
    """A thread target: lock the instance row, wait until ``n_waiters`` statements wait
    for a lock, run ``then(cursor)`` in the same transaction, commit."""

    def target():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {inst_table()} WHERE id = %s FOR UPDATE",  # noqa: S608
                [pk_param(instance_id)],
            )
            hold_the_instance.locked.set()
            deadline = time.monotonic() + TIMEOUT
            while waiting_on_locks(cursor) < n_waiters:
                assert time.monotonic() < deadline, "the statements never waited"
                time.sleep(0.02)
            if then is not None:
                then(cursor)
        return "held"

    return target


def after_lock(fn):
    def target():
        assert hold_the_instance.locked.wait(TIMEOUT)
        return fn()

    return target


def two_branches_claimed(review_engine):
    instance = review_engine.start_workflow("fast_parallel", initial_data={"n": 1})
    (start_id,) = review_engine.take()
    run, token = review_engine.claim(start_id)
    runnable, claimed = review_engine.finish(ClaimedRun(run, token), {"start": 1})
    assert claimed is None and len(runnable) == 2
    (ra, ta), (rb, tb) = (review_engine.claim(pk) for pk in runnable)
    return instance, (ra, ta), (rb, tb)


# -- concurrency (PostgreSQL: the unlocked statement waits in FOR UPDATE) -------------


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("holder_writes", [False, True])
def test_parallel_branches_finishing_at_once_lose_nothing(review_engine, spy, holder_writes):
    instance, (ra, ta), (rb, tb) = two_branches_claimed(review_engine)
    hold_the_instance.locked = threading.Event()

    def another_writer(cursor):  # a third transition commits a context change meanwhile
        cursor.execute(
            f"UPDATE {inst_table()} SET context = context || '{{\"x\": 1}}'::jsonb "  # noqa: S608
            "WHERE id = %s",
            [pk_param(instance.pk)],
        )

    results = in_threads(
        hold_the_instance(instance.pk, 2, another_writer if holder_writes else None),
        after_lock(lambda: review_engine.finish(ClaimedRun(ra, ta), {"a": 1}, claim_next=True)),
        after_lock(lambda: review_engine.finish(ClaimedRun(rb, tb), {"b": 1}, claim_next=True)),
    )
    for result in results:
        assert not isinstance(result, Exception), result
    stored = WorkflowInstance.objects.get(pk=instance.pk)
    expected = {"n": 1, "start": 1, "a": 1, "b": 1}
    if holder_writes:
        expected["x"] = 1
    assert stored.context == expected
    assert sorted(stored.current_steps) == ["a2", "b2"]
    runs = dict(StepRun.objects.filter(instance_id=instance.pk).values_list("step_name", "status"))
    assert runs == {
        "start": "completed",
        "a": "completed",
        "b": "completed",
        "a2": "running",
        "b2": "running",
    }
    done = WorkflowEvent.objects.filter(instance_id=instance.pk, type="StepExecuted")
    assert sorted(done.values_list("step_name", flat=True)) == ["a", "b", "start"]
    assert spy.calls >= 3  # both tried unlocked; at least one planned again, locked


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_cancel_committed_while_the_statement_waits_discards_the_result(review_engine, spy):
    instance, (ra, ta), _ = two_branches_claimed(review_engine)
    hold_the_instance.locked = threading.Event()

    def cancel_while_holding():
        with transaction.atomic():  # cancel's transition commits when this block does
            review_engine.cancel_workflow(instance.pk, reason="stop")
            hold_the_instance.locked.set()
            deadline = time.monotonic() + TIMEOUT
            with connection.cursor() as cursor:
                while waiting_on_locks(cursor) < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
        return "canceled"

    before_events = WorkflowEvent.objects.filter(instance_id=instance.pk).count()
    results = in_threads(
        cancel_while_holding,
        after_lock(
            lambda: review_engine.finish(ClaimedRun(ra, ta), {"a": "late"}, claim_next=True)
        ),
    )
    assert results[0] == "canceled"
    assert results[1] == ([], None)
    stored = WorkflowInstance.objects.get(pk=instance.pk)
    assert stored.status == WorkflowStatus.CANCELED
    assert "a" not in stored.context and stored.current_steps == []
    assert StepRun.objects.get(pk=ra.pk).status == StepRunStatus.CANCELED
    assert not StepRun.objects.filter(instance_id=instance.pk, step_name="a2").exists()
    types = list(
        WorkflowEvent.objects.filter(instance_id=instance.pk)
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert types[before_events:] == ["WorkflowCanceled"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_lease_taken_over_while_the_statement_waits_writes_nothing(review_engine, spy, caplog):
    """The sweep re-queues the run under the instance's lock and changes none of the
    instance's compared columns: the instance check passes, the run's fence must not."""
    instance, (ra, ta), _ = two_branches_claimed(review_engine)
    hold_the_instance.locked = threading.Event()
    run_table = connection.ops.quote_name(StepRun._meta.db_table)

    def requeue(cursor):
        cursor.execute(
            f"UPDATE {run_table} SET status = 'queued', lease_token = NULL WHERE id = %s",  # noqa: S608
            [ra.pk],
        )
        cursor.execute(
            f"UPDATE {inst_table()} SET updated_at = now() WHERE id = %s",  # noqa: S608
            [pk_param(instance.pk)],
        )

    before = state(instance.pk)
    calls = spy.calls
    results = in_threads(
        hold_the_instance(instance.pk, 1, requeue),
        after_lock(
            lambda: review_engine.finish(ClaimedRun(ra, ta), {"a": "late"}, claim_next=True)
        ),
    )
    assert results[1] == ([], None), results
    after = state(instance.pk)
    assert {k: v for k, v in after[0].items() if k != "updated_at"} == {
        k: v for k, v in before[0].items() if k != "updated_at"
    }
    assert [r for r in after[1] if r["id"] != ra.pk] == [r for r in before[1] if r["id"] != ra.pk]
    assert StepRun.objects.get(pk=ra.pk).status == StepRunStatus.QUEUED
    assert after[2] == before[2]  # no event
    assert "lost its lease" in caplog.text
    assert spy.calls == calls + 1  # the unlocked statement: instance as expected, fence not


# -- an error raised by COMMIT -------------------------------------------------------

DEFERRED_TRIGGER = """
CREATE OR REPLACE FUNCTION review_refuse_s2() RETURNS trigger AS $$
BEGIN
  IF NEW.step_name = 's2' THEN RAISE EXCEPTION 'refused at commit'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER review_refuse_s2 AFTER INSERT ON {table}
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION review_refuse_s2();
"""


@pytest.fixture
def refuse_s2_at_commit():
    table = connection.ops.quote_name(WorkflowEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(DEFERRED_TRIGGER.format(table=table))
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER review_refuse_s2 ON {table}")
        cursor.execute("DROP FUNCTION review_refuse_s2()")


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_error_at_commit_leaves_the_connection_as_a_failed_commit_does(
    review_engine, spy, refuse_s2_at_commit
):
    instance = review_engine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = review_engine.take()
    run, token = review_engine.claim(run_id)
    _, (run2, token2) = review_engine.finish(ClaimedRun(run, token), {"s1": 1}, claim_next=True)
    bus_before = len(review_engine.event_bus.events)
    before = state(instance.pk)
    sqls = []
    with (
        connection.execute_wrapper(lambda ex, sql, *a: sqls.append(sql) or ex(sql, *a)),
        pytest.raises(DatabaseError, match="refused at commit"),
    ):
        review_engine.finish(ClaimedRun(run2, token2), {"s2": 2}, claim_next=True)
    # Outside a transaction the unlocked statement is a transaction of its own: it
    # commits, or fails at its commit, by itself.
    assert sqls and not any(sql.endswith("COMMIT") for sql in sqls)
    # Django's state is that of a rolled back transaction; the connection works.
    assert not connection.in_atomic_block
    assert not connection.needs_rollback
    assert connection.get_autocommit()
    assert connection.run_on_commit == []
    assert state(instance.pk) == before  # nothing committed
    assert len(review_engine.event_bus.events) == bus_before  # no event delivered
    # The run is still the worker's: finishing it again (the refusal gone) commits once.
    table = connection.ops.quote_name(WorkflowEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER review_refuse_s2")
    run2 = StepRun.objects.select_related("instance__definition").get(pk=run2.pk)
    _, claimed = review_engine.finish(ClaimedRun(run2, token2), {"s2": 2}, claim_next=True)
    assert claimed is not None
    stored = WorkflowInstance.objects.get(pk=instance.pk)
    assert stored.context == {"n": 1, "s1": 1, "s2": 2}
    assert [e.step_name for e in review_engine.event_bus.events[bus_before:]] == ["s2"]


# -- server-side binding, a connection closed by a step --------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_server_side_binding_falls_back_to_a_separate_commit(review_registry, spy):
    options = connection.settings_dict.setdefault("OPTIONS", {})
    connection.close()
    options["server_side_binding"] = True
    try:
        bus = InMemoryEventBus()
        sqls = []
        with connection.execute_wrapper(lambda ex, sql, *a: sqls.append(sql) or ex(sql, *a)):
            instance = LocalExecutionEngine(review_registry, event_bus=bus).start_workflow(
                "fast_chain", initial_data={"n": "naïve \u2603"}
            )
        assert not fastpath.commits_in_statement(connection)
    finally:
        options.pop("server_side_binding")
        connection.close()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["n"] == "naïve \u2603"
    assert spy.calls == 4
    assert not any(sql.endswith("; COMMIT") for sql in sqls)
    assert [e.type for e in bus.events].count("StepExecuted") == 4


@pytest.mark.django_db(transaction=True)
def test_a_step_that_closes_the_connection(review_registry, spy):
    bus = InMemoryEventBus()
    instance = LocalExecutionEngine(review_registry, event_bus=bus).start_workflow("fast_closing")
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"c1": True, "c2": True, "c3": True}
    assert spy.calls == 3
    assert [e.type for e in bus.events].count("StepExecuted") == 3


class PrimaryReplica:
    """Reads from "replica", writes to "default": Django's documented primary/replica."""

    def db_for_read(self, model, **hints):
        return "replica"

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, *args, **hints):
        return True


@pytest.fixture
def read_only_replica():
    """An alias on the same database whose sessions are read-only, as a replica's are
    (a wrapper of this thread only, so that the test case's alias check lets it be)."""
    settings = dict(connections.settings["default"])
    settings["OPTIONS"] = {
        **settings.get("OPTIONS", {}),
        "options": "-c default_transaction_read_only=on",
    }
    wrapper = load_backend(settings["ENGINE"]).DatabaseWrapper(settings, "replica")
    connections["replica"] = wrapper
    try:
        with override_settings(DATABASE_ROUTERS=[PrimaryReplica()]):
            yield wrapper
    finally:
        wrapper.close()
        del connections["replica"]


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_worker_behind_a_primary_replica_router_writes_to_the_primary(
    review_engine, spy, read_only_replica
):
    instance = review_engine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = review_engine.take()
    with read_only_replica.cursor() as cursor:  # the replica refuses writes
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone() == ("on",)
    assert review_engine.process_run(run_id) == []  # s1, then s2..s4 chained
    stored = WorkflowInstance.objects.using("default").get(pk=instance.pk)
    assert stored.status == WorkflowStatus.COMPLETED


# -- caches and guards ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_threads_connection_is_not_kept_alive_by_the_sql_caches(review_registry):
    refs = []

    def work():
        LocalExecutionEngine(review_registry).start_workflow("fast_chain")
        refs.append(weakref.ref(connections["default"]))
        connections["default"].close()

    for _ in range(3):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(TIMEOUT)
    gc.collect()
    assert [ref() for ref in refs if ref() is not None] == []


@pytest.mark.django_db(transaction=True)
@postgres_only  # SQLite has no row locks: the ORM does not refuse there either
def test_the_instance_lock_outside_a_transaction_is_refused_as_the_orm_refused_it(review_registry):
    instance = QueueingEngine(review_registry).start_workflow("fast_chain")
    with pytest.raises(TransactionManagementError):
        lock_instance(instance.pk)
