"""Review of the chained-step fast path (``engine.sql.fastpath``, ``engine.sql.lock``).

What the change must keep: a lost lease writes nothing (also when the lease is taken
over while the statement waits for the instance's lock), cancel discards a running
step's result, concurrent parallel branches lose nothing, an error raised at COMMIT
leaves Django's connection as a failed commit would, server-side binding falls back,
a step that closes the connection, and the per-connection caches.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.db.transaction import TransactionManagementError
from django.db.utils import load_backend
from django.test.utils import override_settings

from django_workflows import (
    BaseMachineStep,
    Edge,
    InMemoryEventBus,
    LocalExecutionEngine,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.engine import ClaimedRun
from django_workflows.engine.sql import fastpath
from django_workflows.engine.transition import lock_instance
from django_workflows.models import StepRun, StepRunStatus, WorkflowEvent, WorkflowInstance

from .helpers import TIMEOUT, QueueingEngine, in_threads
from .test_fast_path import Put, Spy, definitions, state

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
def registry():
    reg = WorkflowRegistry()
    for definition in [*definitions(), parallel(), closing_chain()]:
        reg.register_definition(definition)
    return reg


@pytest.fixture
def qengine(registry):
    return QueueingEngine(registry, event_bus=InMemoryEventBus())


@pytest.fixture
def spy(monkeypatch):
    return Spy(monkeypatch)


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


def two_branches_claimed(qengine):
    instance = qengine.start_workflow("fast_parallel", initial_data={"n": 1})
    (start_id,) = qengine.take()
    run, token = qengine.claim(start_id)
    runnable, claimed = qengine.finish(ClaimedRun(run, token), {"start": 1})
    assert claimed is None and len(runnable) == 2
    (ra, ta), (rb, tb) = (qengine.claim(pk) for pk in runnable)
    return instance, (ra, ta), (rb, tb)


# -- concurrency (PostgreSQL: the unlocked statement waits in FOR UPDATE) -------------


@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("holder_writes", [False, True])
def test_parallel_branches_finishing_at_once_lose_nothing(qengine, spy, holder_writes):
    instance, (ra, ta), (rb, tb) = two_branches_claimed(qengine)
    hold_the_instance.locked = threading.Event()

    def another_writer(cursor):  # a third transition commits a context change meanwhile
        cursor.execute(
            f"UPDATE {inst_table()} SET context = context || '{{\"x\": 1}}'::jsonb "  # noqa: S608
            "WHERE id = %s",
            [pk_param(instance.pk)],
        )

    results = in_threads(
        hold_the_instance(instance.pk, 2, another_writer if holder_writes else None),
        after_lock(lambda: qengine.finish(ClaimedRun(ra, ta), {"a": 1}, claim_next=True)),
        after_lock(lambda: qengine.finish(ClaimedRun(rb, tb), {"b": 1}, claim_next=True)),
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
def test_a_cancel_committed_while_the_statement_waits_discards_the_result(qengine, spy):
    instance, (ra, ta), _ = two_branches_claimed(qengine)
    hold_the_instance.locked = threading.Event()

    def cancel_while_holding():
        with transaction.atomic():  # cancel's transition commits when this block does
            qengine.cancel_workflow(instance.pk, reason="stop")
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
        after_lock(lambda: qengine.finish(ClaimedRun(ra, ta), {"a": "late"}, claim_next=True)),
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
def test_a_lease_taken_over_while_the_statement_waits_writes_nothing(qengine, spy, caplog):
    """The sweep re-queues the run under the instance's lock and changes none of the
    instance's compared columns: the instance check passes, the run's fence must not."""
    instance, (ra, ta), _ = two_branches_claimed(qengine)
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
        after_lock(lambda: qengine.finish(ClaimedRun(ra, ta), {"a": "late"}, claim_next=True)),
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
@pytest.mark.parametrize("in_statement", [True, False])
def test_an_error_at_commit_leaves_the_connection_as_a_failed_commit_does(
    qengine, spy, monkeypatch, refuse_s2_at_commit, in_statement
):
    if not in_statement:
        monkeypatch.setattr(fastpath, "commits_in_statement", lambda connection: False)
    instance = qengine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    _, (run2, token2) = qengine.finish(ClaimedRun(run, token), {"s1": 1}, claim_next=True)
    bus_before = len(qengine.event_bus.events)
    before = state(instance.pk)
    sqls = []
    with (
        connection.execute_wrapper(lambda ex, sql, *a: sqls.append(sql) or ex(sql, *a)),
        pytest.raises(DatabaseError, match="refused at commit"),
    ):
        qengine.finish(ClaimedRun(run2, token2), {"s2": 2}, claim_next=True)
    assert any(sql.endswith("; COMMIT") for sql in sqls) == in_statement
    # Django's state is that of a rolled back transaction; the connection works.
    assert not connection.in_atomic_block
    assert not connection.needs_rollback
    assert connection.get_autocommit()
    assert connection.run_on_commit == []
    assert state(instance.pk) == before  # nothing committed
    assert len(qengine.event_bus.events) == bus_before  # no event delivered
    # The run is still the worker's: finishing it again (the refusal gone) commits once.
    table = connection.ops.quote_name(WorkflowEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER review_refuse_s2")
    run2 = StepRun.objects.select_related("instance__definition").get(pk=run2.pk)
    _, claimed = qengine.finish(ClaimedRun(run2, token2), {"s2": 2}, claim_next=True)
    assert claimed is not None
    stored = WorkflowInstance.objects.get(pk=instance.pk)
    assert stored.context == {"n": 1, "s1": 1, "s2": 2}
    assert [e.step_name for e in qengine.event_bus.events[bus_before:]] == ["s2"]


# -- server-side binding, a connection closed by a step --------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_server_side_binding_falls_back_to_a_separate_commit(registry, spy):
    options = connection.settings_dict.setdefault("OPTIONS", {})
    connection.close()
    options["server_side_binding"] = True
    try:
        bus = InMemoryEventBus()
        sqls = []
        with connection.execute_wrapper(lambda ex, sql, *a: sqls.append(sql) or ex(sql, *a)):
            instance = LocalExecutionEngine(registry, event_bus=bus).start_workflow(
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
def test_a_step_that_closes_the_connection(registry, spy):
    bus = InMemoryEventBus()
    instance = LocalExecutionEngine(registry, event_bus=bus).start_workflow("fast_closing")
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
    qengine, spy, read_only_replica
):
    instance = qengine.start_workflow("fast_chain", initial_data={"n": 1})
    (run_id,) = qengine.take()
    with read_only_replica.cursor() as cursor:  # the replica refuses writes
        cursor.execute("SHOW transaction_read_only")
        assert cursor.fetchone() == ("on",)
    assert qengine.process_run(run_id) == []  # s1, then s2..s4 chained
    stored = WorkflowInstance.objects.using("default").get(pk=instance.pk)
    assert stored.status == WorkflowStatus.COMPLETED


# -- caches and guards ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_threads_connection_is_not_kept_alive_by_the_sql_caches(registry):
    refs = []

    def work():
        LocalExecutionEngine(registry).start_workflow("fast_chain")
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
def test_the_instance_lock_outside_a_transaction_is_refused_as_the_orm_refused_it(registry):
    instance = QueueingEngine(registry).start_workflow("fast_chain")
    with pytest.raises(TransactionManagementError):
        lock_instance(instance.pk)
