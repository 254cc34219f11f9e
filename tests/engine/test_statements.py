"""The statements around a step (issue 18): what a start, a claim and a completion send,
counted outside any test transaction, and the same however many rows exist."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_workflows.engine import LocalExecutionEngine
from django_workflows.models import HumanTask, StepRun, WorkflowStatus
from tests.helpers import QueueingEngine

from .test_fast_path import fast_registry  # noqa: F401 - a fixture

TX_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")
pg = connection.vendor == "postgresql"


def captured(fn) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        fn()
    return [q["sql"] for q in queries.captured_queries]


def statements(sqls: list[str]) -> list[str]:
    return [sql for sql in sqls if not sql.upper().startswith(TX_CONTROL)]


def claims(sqls: list[str]) -> list[str]:
    claim = 'UPDATE "django_workflows_steprun" SET "status" = \'running\''
    return [sql for sql in sqls if sql.startswith((claim, "WITH claimed"))]


@pytest.mark.django_db(transaction=True)
def test_a_local_start_claims_its_first_step_in_its_own_transaction(fast_registry):  # noqa: F811
    engine = LocalExecutionEngine(fast_registry)
    engine.start_workflow("fast_chain")  # warm: the definition row, the SQL caches
    sqls = captured(lambda: engine.start_workflow("fast_chain"))
    # No claim: the start created its first run already claimed, as a chain's next one.
    assert claims(sqls) == []
    start = sqls[: sqls.index("COMMIT")]  # the start's own transaction
    # The instance is inserted once, as the start's plan leaves it (never updated after).
    into = 'INSERT INTO "django_workflows_workflowinstance"'
    assert sum(sql.count(into) for sql in start) == 1
    assert not any('UPDATE "django_workflows_workflowinstance"' in sql for sql in start)
    n = len(statements(sqls))
    # The start: its definition row, then on PostgreSQL one statement (the instance,
    # the run, the event, and the COMMIT), elsewhere three. PostgreSQL: a statement per
    # step, and the pending-signal check at the end. SQLite: per step the lock, the
    # run, the next run, the events and the instance (the last step has no next run,
    # and checks for pending signals instead).
    assert n == (2 + 4 + 1 if pg else 4 + 4 * 5), statements(sqls)
    if pg:
        assert start[-1].startswith("WITH inst AS (INSERT") and start[-1].endswith("; COMMIT")


@pytest.mark.django_db(transaction=True)
def test_a_chained_step_outside_a_transaction_is_one_round_trip_on_postgresql(
    fast_registry,  # noqa: F811
):
    engine = LocalExecutionEngine(fast_registry)
    engine.start_workflow("fast_chain")
    sqls = captured(lambda: engine.start_workflow("fast_chain"))
    steps = [i for i, sql in enumerate(sqls) if sql.startswith("WITH locked AS")]
    if not pg:
        assert steps == []
        return
    assert len(steps) == 4
    for i in steps:  # no BEGIN before it, no COMMIT in or after it
        assert sqls[i - 1] != "BEGIN" and not sqls[i].endswith("COMMIT")
        assert i + 1 == len(sqls) or sqls[i + 1] != "COMMIT"


@pytest.mark.django_db(transaction=True)
def test_a_claim_is_one_statement_on_postgresql(fast_registry):  # noqa: F811
    engine = QueueingEngine(fast_registry)
    engine.start_workflow("fast_chain")
    (run_id,) = engine.take()
    claimed: list = []
    sqls = captured(lambda: claimed.append(engine.claim(run_id)))
    run, token = claimed[0]
    assert run.status == "running" and run.lease_token == token and run.attempt == 1
    assert run.instance.definition.name == "fast_chain"  # cached: no query
    assert len(statements(sqls)) == (1 if pg else 2)
    # The same row as the ORM's read of it.
    stored = StepRun.objects.get(pk=run_id)
    for field in StepRun._meta.concrete_fields:
        assert getattr(run, field.attname) == getattr(stored, field.attname), field.name
    assert claims(captured(lambda: engine.claim(run_id))) and engine.claim(run_id) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("others", [0, 60])
def test_a_completion_by_task_id(fast_registry, others):  # noqa: F811
    engine = LocalExecutionEngine(fast_registry)
    for _ in range(others + 2):
        engine.start_workflow("fast_human")
    first, task = HumanTask.objects.filter(status="open").order_by("id")[:2]
    engine.complete_task(first.pk, None, {})  # warm
    done: list = []
    sqls = captured(lambda: done.append(engine.complete_task(task.pk, None, {})))
    # lock (the task's instance found in it), the open task, its update and its run's
    # (one statement on PostgreSQL), the next run's insert (already claimed: no claim
    # after), the instance and its events (one statement on PostgreSQL, with the
    # COMMIT); then the last step and the pending-signal check as the instance
    # completes; no read-back
    body = statements(sqls)
    assert claims(sqls) == []
    assert len(body) == (5 + 2 if pg else 7 + 5), body
    if pg:
        assert any(sql.startswith("WITH inst AS") and sql.endswith("; COMMIT") for sql in body)
    instance = done[0]
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == type(instance).objects.get(pk=instance.pk).context


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("pending", [0, 2])
def test_a_completion_that_finishes_discards_pending_signals_in_its_statement(pending):
    """The instance finished: its buffered signals are discarded, with their events after
    the others, in the statement that writes the instance (PostgreSQL)."""
    from django_workflows import Edge, WorkflowDefinition, WorkflowRegistry  # noqa: F401
    from django_workflows.events import InMemoryEventBus
    from django_workflows.models import WorkflowEvent, WorkflowSignal

    from .test_fast_path import Approve

    registry = WorkflowRegistry()
    registry.register_definition(
        WorkflowDefinition(name="one_ok", version="1", initial_step="ok", steps={"ok": Approve()})
    )
    bus = InMemoryEventBus()
    engine = LocalExecutionEngine(registry, event_bus=bus)
    warm = engine.start_workflow("one_ok")
    engine.complete_task(HumanTask.objects.get(instance=warm).pk, None, {})
    instance = engine.start_workflow("one_ok")
    for n in range(pending):
        engine.send_signal(f"late{n}", {"n": n}, instance_id=instance.pk)
    task = HumanTask.objects.get(instance=instance)
    delivered = len(bus.events)
    sqls = captured(lambda: engine.complete_task(task.pk, None, {}))
    # the lock, the task, its update and its run's (one statement on PostgreSQL), then
    # one statement on PostgreSQL; SQLite: the signals' look-up (and their update),
    # instance, events
    assert len(statements(sqls)) == (4 if pg else 7 + (1 if pending else 0)), statements(sqls)
    signals = WorkflowSignal.objects.filter(instance=instance).order_by("id")
    assert [s.discarded_at is not None for s in signals] == [True] * pending
    types = list(
        WorkflowEvent.objects.filter(instance=instance)
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert types[-1 - pending :] == ["WorkflowCompleted"] + ["SignalDiscarded"] * pending
    payloads = [
        e.payload for e in WorkflowEvent.objects.filter(instance=instance, type="SignalDiscarded")
    ]
    assert payloads == [
        {"signal": s.name, "signal_id": s.pk, "user_id": None, "reason": ""} for s in signals
    ]
    sent = [e for e in bus.events[delivered:] if e.type == "SignalDiscarded"]
    assert [(e.signal, e.signal_id) for e in sent] == [(s.name, s.pk) for s in signals]


@pytest.mark.django_db(transaction=True)
def test_a_task_save_receiver_still_hears_the_completion(fast_registry):  # noqa: F811
    """Hand-written SQL writes a task only while nobody listens to its save signals."""
    from django.db.models import signals

    engine = LocalExecutionEngine(fast_registry)
    engine.start_workflow("fast_human")
    task = HumanTask.objects.get(status="open")
    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append((instance.pk, instance.status))

    signals.post_save.connect(receiver, sender=HumanTask)
    try:
        engine.complete_task(task.pk, None, {})
    finally:
        signals.post_save.disconnect(receiver, sender=HumanTask)
    assert heard == [(task.pk, "completed")]
    assert StepRun.objects.get(pk=task.step_run_id).status == "completed"
