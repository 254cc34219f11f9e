"""The fast path of a chained machine step (``engine.sql.fastpath``).

Finishing a machine step whose edges lead on, unconditionally, to machine steps that
are not joins (or that ends its workflow) writes the run's fenced update, the next runs,
the events and the instance in SQL built once: one statement on PostgreSQL, four on
SQLite. These tests run each workflow once with the fast path and once with the ORM's
writes and compare every row, the events the bus got and the raw JSON stored; and they
show that a lost lease writes nothing, that the fast path is not taken where it would
differ (joins, human steps, a failed step, ``save`` signals), and what a step costs.
They run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.models import signals
from django.db.models.functions import Now
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
from django_workflows.models import (
    StepRun,
    StepRunStatus,
    WorkflowEvent,
    WorkflowInstance,
)

from .helpers import QueueingEngine

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
    assert saved[-1] == WorkflowStatus.COMPLETED and len(saved) == 6  # create, start, 4 steps


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
    carrying = [sql for sql in sqls if sql.endswith("; COMMIT")]
    if connection.vendor == "postgresql":
        assert len(carrying) == 4 and all(sql.startswith("WITH ") for sql in carrying)
    else:
        assert carrying == []
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
