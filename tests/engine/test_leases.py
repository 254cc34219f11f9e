"""Leases and fencing, without a cluster: the test plays the workers.

A claim takes a run QUEUED -> RUNNING under a fresh lease token and counts the
attempt; the outcome is written only while that token still holds. These tests
make a worker lose its lease (expire it, recover, claim again) and show that its
late result changes nothing, that attempts are counted at claim, that the
heartbeat keeps a long step's lease alive, and that the sweep re-sends runs left
QUEUED for too long. They run on SQLite and PostgreSQL.
"""

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connections
from django.db.models import DateTimeField
from django.db.models.functions import Now
from django.test import override_settings

from django_workflows import (
    BaseMachineStep,
    Edge,
    RetryPolicy,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.engine import BaseExecutionEngine, ClaimedRun
from django_workflows.engine.leases import Heartbeat, lease_keeper
from django_workflows.models import StepRun, StepRunStatus

from ..helpers import QueueingEngine

DEADLINE = 20.0


class Work(BaseMachineStep):
    """Sets ``<step>`` to the attempt it ran in."""

    retry = RetryPolicy(max_attempts=3)

    def execute(self, context):
        context.set(context.step_name, context.attempt)


class NeverRuns(BaseMachineStep):
    """Its worker is killed before it gets anywhere: the test only claims it."""

    retry = RetryPolicy(max_attempts=2)

    def execute(self, context):
        raise AssertionError("the test claims this step but never executes it")


class Once(BaseMachineStep):
    """No retry policy: the settings' default (one attempt)."""

    def execute(self, context):
        context.set("done", context.attempt)


RAISED: list[str] = []  # the runs' executions that raised, in order


class FailsTwice(BaseMachineStep):
    """Raises whenever it runs to the end (the crashes never get that far)."""

    retry = RetryPolicy(max_attempts=2)

    def execute(self, context):
        RAISED.append(context.step_name)
        raise RuntimeError(f"failure {len(RAISED)}")


class FailsOnce(BaseMachineStep):
    """No retry policy: raises the first time only."""

    def execute(self, context):
        if context.attempt == 1:
            raise RuntimeError("first try")
        context.set("done", context.attempt)


@pytest.fixture(autouse=True)
def _clear_raised():
    RAISED.clear()


@pytest.fixture
def fence_registry():
    reg = WorkflowRegistry()
    reg.register_definition(
        WorkflowDefinition(
            name="fence",
            version="1",
            initial_step="work",
            steps={"work": Work(), "end": Work()},
            edges=[Edge("work", "end")],
        )
    )
    reg.register_definition(
        WorkflowDefinition(name="single", version="1", initial_step="work", steps={"work": Work()})
    )
    reg.register_definition(
        WorkflowDefinition(
            name="crashing",
            version="1",
            initial_step="die",
            steps={"die": NeverRuns(), "end": Work()},
            edges=[Edge("die", "end")],
        )
    )
    return reg


@pytest.fixture
def qengine(fence_registry):
    return QueueingEngine(fence_registry)


def snapshot(instance_id):
    """Everything a transition could change: the instance, its runs and its history."""
    from django_workflows.models import WorkflowEvent, WorkflowInstance

    instance = WorkflowInstance.objects.get(pk=instance_id)
    runs = list(
        StepRun.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values_list(
            "step_name",
            "status",
            "attempt",
            "lease_token",
            "lease_expires_at",
            "changes",
            "error",
            "due_at",
            "finished_at",
        )
    )
    events = list(
        WorkflowEvent.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values_list("type", "step_name", "payload")
    )
    return {
        "status": instance.status,
        "context": instance.context,
        "error": instance.error,
        "failed_step": instance.failed_step,
        "current_steps": instance.current_steps,
        "runs": runs,
        "events": events,
    }


def expire_lease(run_id):
    """What time does to a killed worker: its lease runs out (on the database clock)."""
    assert StepRun.objects.filter(pk=run_id, status=StepRunStatus.RUNNING).update(
        lease_expires_at=Now() - timedelta(seconds=1)
    )


def lose_lease(engine, run_id):
    """Claim ``run_id``, let the lease expire and the sweep recover it: the first worker
    is now a zombie holding a stale token. Returns that worker's (run, token)."""
    run, token = engine.claim(run_id)
    expire_lease(run_id)
    assert engine.recover_expired_leases() == 1
    assert engine.take() == [run_id]
    assert StepRun.objects.get(pk=run_id).status == StepRunStatus.QUEUED
    return run, token


def history(instance_id, step_name):
    from django_workflows.models import WorkflowEvent

    return list(
        WorkflowEvent.objects.filter(
            instance_id=instance_id, step_name=step_name, type="StepExecuted"
        )
        .order_by("id")
        .values_list("payload__status", "payload__attempt")
    )


# -- (a) a late result from a worker that lost its lease is discarded --------------


@pytest.mark.django_db
def test_late_result_while_the_new_claim_runs_is_discarded(qengine, caplog):
    instance = qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    old_run, old_token = lose_lease(qengine, run_id)

    new_run, new_token = qengine.claim(run_id)
    assert new_token != old_token
    assert new_run.attempt == 2
    before = snapshot(instance.id)

    # The first worker wakes up and reports while the second one is executing.
    assert qengine.finish(ClaimedRun(old_run, old_token), {"work": "late"}).runnable == []

    assert snapshot(instance.id) == before
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.lease_token) == ("running", 2, new_token)
    assert "lost its lease" in caplog.text
    assert qengine.queued == []

    # The worker holding the lease still commits its result, once.
    (end_run,) = qengine.finish(ClaimedRun(new_run, new_token), {"work": 2}).runnable
    assert qengine.process_run(end_run) == []
    instance = qengine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"work": 2, "end": 1}
    assert history(instance.id, "work") == [("retrying", 1), ("completed", 2)]


@pytest.mark.django_db
def test_late_result_after_the_new_claim_finished_is_discarded(qengine):
    instance = qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    old_run, old_token = lose_lease(qengine, run_id)
    new_run, new_token = qengine.claim(run_id)
    (end_run,) = qengine.finish(
        ClaimedRun(new_run, new_token), {"work": 2}
    ).runnable  # "end" is next
    assert StepRun.objects.get(pk=end_run).step_name == "end"
    before = snapshot(instance.id)
    assert before["context"] == {"work": 2}

    assert (
        qengine.finish(ClaimedRun(old_run, old_token), {"work": "late", "extra": True}).runnable
        == []
    )

    after = snapshot(instance.id)
    assert after == before
    assert [r[:3] for r in after["runs"]] == [("work", "completed", 2), ("end", "queued", 0)]
    assert sum(1 for e in after["events"] if e[0] == "StepExecuted") == 2  # retrying, completed


@pytest.mark.django_db
def test_late_result_of_a_canceled_instance_is_discarded(qengine):
    instance = qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    run, token = qengine.claim(run_id)
    qengine.cancel_workflow(instance.id, reason="no longer needed")
    before = snapshot(instance.id)

    assert qengine.finish(ClaimedRun(run, token), {"work": "late"}).runnable == []

    assert snapshot(instance.id) == before
    assert before["status"] == WorkflowStatus.CANCELED
    assert before["context"] == {}


# -- (b) a failure reported with a stale token changes nothing -----------------------


@pytest.mark.django_db
@pytest.mark.parametrize("retryable", [True, False])
@pytest.mark.parametrize("reclaimed", [True, False], ids=["reclaimed", "requeued"])
def test_fail_run_with_a_stale_token_changes_nothing(qengine, retryable, reclaimed):
    instance = qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    old_run, old_token = lose_lease(qengine, run_id)
    if reclaimed:
        qengine.claim(run_id)  # another worker runs attempt 2 now
    before = snapshot(instance.id)

    result = qengine.fail(
        ClaimedRun(old_run, old_token),
        RuntimeError("late failure"),
        changes={"x": 1},
        retryable=retryable,
    )

    assert result == []
    assert qengine.queued == []
    after = snapshot(instance.id)
    assert after == before
    assert after["status"] == WorkflowStatus.RUNNING
    assert after["error"] == ""
    run = StepRun.objects.get(pk=run_id)
    assert run.status == ("running" if reclaimed else "queued")
    assert run.attempt == (2 if reclaimed else 1)
    assert "late failure" not in run.error


# -- (c) attempts are counted at claim -----------------------------------------------


def crash(qengine, run_id):
    """A worker claims the run and dies (the step never reports back); the sweep sees
    its lease expired. Returns the dead worker's token."""
    _run, token = qengine.claim(run_id)
    expire_lease(run_id)
    assert qengine.recover_expired_leases() == 1
    return token


@pytest.mark.django_db
def test_a_crash_reruns_the_step_by_default_whatever_its_retry_policy(qengine):
    """The defaults (CRASH_LIMIT 3, DEFAULT_MAX_ATTEMPTS 1): a killed worker (a deploy,
    the OOM killer) never fails the instance by itself; the step runs again."""
    qengine.registry.register_definition(
        WorkflowDefinition(name="once", version="1", initial_step="work", steps={"work": Once()})
    )
    instance = qengine.start_workflow("once")
    (run_id,) = qengine.take()
    assert StepRun.objects.get(pk=run_id).attempt == 0

    crash(qengine, run_id)
    assert StepRun.objects.get(pk=run_id).attempt == 1  # counted at claim, before execute()
    assert qengine.take() == [run_id]  # re-queued, not failed
    assert qengine.get_instance(instance.id).status == WorkflowStatus.RUNNING

    qengine.process_run(run_id)  # the next worker runs it to the end
    instance = qengine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.crashes, run.max_attempts) == ("completed", 2, 1, 1)
    assert history(instance.id, "work") == [("retrying", 1), ("completed", 2)]


@pytest.mark.django_db
def test_a_step_that_keeps_killing_its_worker_fails_after_the_crash_limit(qengine):
    instance = qengine.start_workflow("crashing")  # max_attempts=2 counts failures only
    (run_id,) = qengine.take()
    with override_settings(DJANGO_WORKFLOWS={"CRASH_LIMIT": 2}):
        token1 = crash(qengine, run_id)
        assert qengine.take() == [run_id]
        crash(qengine, run_id)
        assert qengine.take() == [run_id]  # two crashes re-run: the limit is 2
        token3 = crash(qengine, run_id)
        assert qengine.take() == []  # the third crash fails it

    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.crashes) == ("failed", 3, 3)
    assert run.lease_token is None
    instance = qengine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "die"
    assert instance.error == (
        "step 'die' keeps killing its worker: the worker running it died 3 times before "
        "it finished (lease expired; CRASH_LIMIT is 2)"
    )
    assert run.error == instance.error
    assert history(instance.id, "die") == [("retrying", 1), ("retrying", 2), ("failed", 3)]
    assert instance.events.filter(type="WorkflowFailed").count() == 1
    assert not StepRun.objects.filter(instance=instance, step_name="end").exists()

    # The sweep has nothing left to do, and no zombie can revive the run.
    assert qengine.recover_expired_leases() == 0
    before = snapshot(instance.id)
    assert qengine.finish(ClaimedRun(run, token3), {"late": True}).runnable == []
    assert qengine.finish(ClaimedRun(run, token1), {"late": True}).runnable == []
    assert snapshot(instance.id) == before


@pytest.mark.django_db
def test_crashes_and_failures_are_counted_apart(qengine):
    """A step with RetryPolicy(max_attempts=2) that crashed once still gets its two tries
    of its own; a crash after its failure does not use them up either."""
    qengine.registry.register_definition(
        WorkflowDefinition(
            name="flaky", version="1", initial_step="work", steps={"work": FailsTwice()}
        )
    )
    instance = qengine.start_workflow("flaky")
    (run_id,) = qengine.take()
    crash(qengine, run_id)  # attempt 1: the worker died
    assert qengine.take() == [run_id]
    # attempt 2: the step raises (failure 1 of 2): retried
    assert qengine.process_run(run_id) == [run_id]
    crash(qengine, run_id)  # attempt 3: the worker died again
    assert qengine.take() == [run_id]
    qengine.process_run(run_id)  # attempt 4: raises (failure 2 of 2): fails
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.crashes, run.max_attempts) == ("failed", 4, 2, 2)
    assert qengine.get_instance(instance.id).error == "RuntimeError: failure 2"


@pytest.mark.django_db
def test_the_attempt_limit_comes_from_the_definition_not_the_creating_process(qengine):
    """The web process created the run with its settings (DEFAULT_MAX_ATTEMPTS 1); the
    worker, configured with 3, decides: the step is retried."""
    qengine.registry.register_definition(
        WorkflowDefinition(
            name="flaky_default", version="1", initial_step="work", steps={"work": FailsOnce()}
        )
    )
    instance = qengine.start_workflow("flaky_default")
    (run_id,) = qengine.take()
    assert StepRun.objects.get(pk=run_id).max_attempts == 1
    with override_settings(DJANGO_WORKFLOWS={"DEFAULT_MAX_ATTEMPTS": 3}):
        # fails once: retried under the worker's policy
        assert qengine.process_run(run_id) == [run_id]
        qengine.process_run(run_id)
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.max_attempts) == ("completed", 2, 3)
    assert qengine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


@pytest.mark.django_db
def test_a_run_is_claimed_once_however_often_it_is_delivered(qengine):
    qengine.start_workflow("fence")
    (run_id,) = qengine.take()

    assert qengine.claim(run_id) is not None
    assert qengine.claim(run_id) is None  # a duplicate message: RUNNING, not QUEUED
    assert qengine.process_run(run_id) == []

    assert StepRun.objects.get(pk=run_id).attempt == 1


# -- (d) the heartbeat keeps a long step's lease alive ---------------------------------

LEASE = 0.9  # renewed every 0.3 s


def lease_and_db_now(run_id):
    return (
        StepRun.objects.filter(pk=run_id)
        .annotate(db_now=Now(output_field=DateTimeField()))
        .values_list("lease_expires_at", "db_now", "status")
        .get()
    )


class OutlivesItsLease(BaseMachineStep):
    """Runs past the lease it was claimed with and records what it saw meanwhile.

    It returns once the database clock has passed the first expiry and the lease still
    lies ahead of it, which only the heartbeat can arrange; without a heartbeat it times
    out and fails. It then asks the sweep to recover expired leases: it must find none.
    """

    engine: BaseExecutionEngine
    observed: dict

    def execute(self, context):
        run_id = StepRun.objects.get(
            instance_id=context.instance_id, step_name=context.step_name
        ).pk
        first_expiry, _, _ = lease_and_db_now(run_id)
        leases = [first_expiry]
        deadline = time.monotonic() + DEADLINE
        while True:
            lease, db_now, status = lease_and_db_now(run_id)
            if lease != leases[-1]:
                leases.append(lease)
            if db_now > first_expiry + timedelta(seconds=LEASE / 3) and lease > db_now:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"lease never renewed past {first_expiry} (now {db_now})")
            time.sleep(0.02)
        self.observed.update(
            leases=leases,
            status=status,
            recovered=self.engine.recover_expired_leases(),
            requeued=list(self.engine.queued),
        )


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": LEASE})
def test_heartbeat_renews_the_lease_of_a_step_that_outlives_it():
    reg = WorkflowRegistry()
    reg.register_definition(
        WorkflowDefinition(
            name="long", version="1", initial_step="long", steps={"long": OutlivesItsLease()}
        )
    )
    engine = QueueingEngine(reg)
    OutlivesItsLease.engine = engine
    OutlivesItsLease.observed = observed = {}
    instance = engine.start_workflow("long")
    (run_id,) = engine.take()

    started = time.monotonic()
    assert engine.process_run(run_id) == []
    elapsed = time.monotonic() - started

    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED, instance.error
    assert elapsed > LEASE  # it did outlive the lease it was claimed with
    leases = observed["leases"]
    assert len(leases) >= 3, leases  # renewed at least twice while it ran
    assert leases == sorted(leases)
    assert observed["status"] == StepRunStatus.RUNNING
    assert observed["recovered"] == 0  # the sweep left the live worker alone
    assert observed["requeued"] == []
    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt) == ("completed", 1)
    assert run.lease_expires_at >= leases[-1] > leases[0] + timedelta(seconds=LEASE / 3)


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": LEASE})
def test_heartbeat_stops_once_the_run_was_taken_over(qengine):
    qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    _run, token = qengine.claim(run_id)
    try:
        with Heartbeat(run_id, token):
            # Another claim took the run over (a new token, its own lease).
            sentinel = StepRun.objects.get(pk=run_id).lease_expires_at + timedelta(hours=1)
            assert StepRun.objects.filter(pk=run_id).update(
                lease_token=uuid.uuid4(), lease_expires_at=sentinel
            )
            # The keeper lets go of the run by itself at its next beat, without being told.
            deadline = time.monotonic() + DEADLINE
            while lease_keeper.holds(run_id):
                assert time.monotonic() < deadline, "the keeper still holds the run"
                time.sleep(0.02)
    finally:
        connections.close_all()
    assert StepRun.objects.get(pk=run_id).lease_expires_at == sentinel  # never renewed again


# -- (e) the sweep re-sends runs left QUEUED for too long ------------------------------


def executed(engine, instance):
    """The instance's context, and the attempt of its one step run."""
    run = StepRun.objects.get(instance_id=instance.id)
    return engine.get_instance(instance.id).context, run.attempt


@pytest.mark.django_db
@override_settings(DJANGO_WORKFLOWS={"STALE_QUEUED_SECONDS": 30})
def test_sweep_resends_stale_queued_runs_and_leaves_fresh_ones(qengine):
    stale_instance = qengine.start_workflow("single")
    fresh_instance = qengine.start_workflow("single")
    stale, fresh = qengine.take()
    assert StepRun.objects.filter(pk=stale).update(queued_at=Now() - timedelta(seconds=31))

    assert qengine.run_due_timers() == 1
    assert qengine.take() == [stale]

    # Sending it twice is harmless: it is claimed and run once.
    assert qengine.process_run(stale) == []
    assert qengine.process_run(stale) == []
    assert executed(qengine, stale_instance) == ({"work": 1}, 1)
    assert qengine.get_instance(stale_instance.id).status == WorkflowStatus.COMPLETED
    assert executed(qengine, fresh_instance) == ({}, 0)
    assert StepRun.objects.get(pk=fresh).status == StepRunStatus.QUEUED
    assert qengine.run_due_timers() == 0


@pytest.mark.django_db
@override_settings(DJANGO_WORKFLOWS={"STALE_QUEUED_SECONDS": 30})
def test_sweep_sends_due_retries_but_not_early_ones_nor_held_runs(qengine):
    due_instance = qengine.start_workflow("single")
    early_instance = qengine.start_workflow("single")
    held_instance = qengine.start_workflow("single")
    due, early, held = qengine.take()
    StepRun.objects.filter(pk=due).update(due_at=Now() - timedelta(seconds=1))
    StepRun.objects.filter(pk=early).update(due_at=Now() + timedelta(hours=1))
    # A QUEUED run of a failed instance (a sibling of a failed branch) waits for retry().
    StepRun.objects.filter(pk=held).update(queued_at=Now() - timedelta(hours=1))
    held_instance.status = WorkflowStatus.FAILED
    held_instance.save(update_fields=["status"])

    assert qengine.run_due_timers() == 1
    assert qengine.take() == [due]
    assert qengine.process_run(early) == []  # not due yet: not claimable either
    assert qengine.process_run(held) == []
    assert qengine.process_run(due) == []
    assert executed(qengine, due_instance) == ({"work": 1}, 1)
    assert executed(qengine, early_instance) == ({}, 0)
    assert executed(qengine, held_instance) == ({}, 0)


@pytest.mark.django_db
@override_settings(DJANGO_WORKFLOWS={"STALE_QUEUED_SECONDS": 30})
def test_a_stale_run_is_resent_once_per_stale_period_not_on_every_sweep(qengine):
    qengine.start_workflow("single")
    (run_id,) = qengine.take()
    StepRun.objects.filter(pk=run_id).update(queued_at=Now() - timedelta(seconds=31))
    assert qengine.run_due_timers() == 1
    assert qengine.take() == [run_id]

    # No worker took it yet (the cluster is down, or busy). The next pass, a second later
    # (the --loop sweeper) or a minute later (the schedule), does not send it again: a
    # stopped cluster does not come back to a queue holding one message per run per pass.
    assert qengine.run_due_timers() == 0
    assert qengine.take() == []

    # Once a worker is back, it runs once.
    assert qengine.process_run(run_id) == []
    assert qengine.process_run(run_id) == []
    assert StepRun.objects.get(pk=run_id).attempt == 1


@pytest.mark.django_db
def test_a_run_whose_definition_is_not_registered_fails_clearly(qengine):
    instance = qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    worker = QueueingEngine(WorkflowRegistry())  # deployed without this workflow

    assert worker.process_run(run_id) == []

    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.attempt, run.lease_token) == ("failed", 1, None)
    instance = qengine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "work"
    assert "'fence'" in instance.error and "registered" in instance.error
    assert run.error == instance.error
    assert worker.run_due_timers() == 0  # nothing left RUNNING for the sweep to trip on


# -- regressions: bugs these tests found, fixed in the engine -------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": LEASE})
def test_heartbeat_survives_one_failed_renewal(qengine, monkeypatch):
    from django.db import OperationalError
    from django.db.models.query import QuerySet

    qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    _run, token = qengine.claim(run_id)
    first_expiry = StepRun.objects.get(pk=run_id).lease_expires_at
    update, failures = QuerySet.update, []

    def flaky_update(self, **kwargs):
        if threading.current_thread().name == "workflow-leases" and not failures:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return update(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", flaky_update)
    heartbeat = Heartbeat(run_id, token)
    try:
        with heartbeat:
            deadline = time.monotonic() + 5 * LEASE
            while StepRun.objects.get(pk=run_id).lease_expires_at == first_expiry:
                assert time.monotonic() < deadline, "the lease was never renewed"
                time.sleep(0.02)
    finally:
        connections.close_all()
    assert failures == [1]


@pytest.mark.django_db
def test_recovery_leaves_a_run_whose_lease_was_renewed_meanwhile(qengine, monkeypatch):
    from django.db.models.query import QuerySet

    qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    _run, token = qengine.claim(run_id)
    expire_lease(run_id)
    first = QuerySet.first

    def first_then_heartbeat(self):
        row = first(self)
        if isinstance(row, StepRun) and row.pk == run_id:
            # The worker's heartbeat commits a renewal right after the sweep read the row.
            StepRun.objects.filter(pk=run_id, lease_token=token).update(
                lease_expires_at=Now() + timedelta(seconds=60)
            )
        return row

    monkeypatch.setattr(QuerySet, "first", first_then_heartbeat)
    qengine.recover_expired_leases()
    monkeypatch.undo()

    run = StepRun.objects.get(pk=run_id)
    assert (run.status, run.lease_token) == ("running", token)
    assert qengine.take() == []


@pytest.mark.django_db(transaction=True)
@override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": LEASE})
def test_no_engine_thread_holds_a_connection_once_a_step_returned(qengine, monkeypatch):
    """A renewal in flight when the step returns finishes, and the lease thread closes its
    connection, before the step's caller goes on (run_workflow returned, then the test
    database could not be dropped: "being accessed by other users")."""
    from django.db.models.query import QuerySet

    qengine.start_workflow("fence")
    (run_id,) = qengine.take()
    _run, token = qengine.claim(run_id)
    update = QuerySet.update
    renewing, go_on = threading.Event(), threading.Event()

    def slow_renewal(self, **kwargs):
        if threading.current_thread().name == "workflow-leases":
            renewing.set()
            assert go_on.wait(DEADLINE)
        return update(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", slow_renewal)
    try:
        with Heartbeat(run_id, token):
            assert renewing.wait(DEADLINE), "the lease was never renewed"
            # The step returns while the renewal is in flight.
            threading.Timer(0.2, go_on.set).start()
        assert go_on.is_set(), "the step's caller went on while the renewal was in flight"
        assert_no_other_connection()
    finally:
        go_on.set()
        connections.close_all()


def assert_no_other_connection():
    """On PostgreSQL: no other session of this process is connected to the test database."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        (others,) = cursor.fetchone()
    assert others == 0


@pytest.mark.django_db(transaction=True)
def test_failures_and_crashes_are_in_the_workers_log(qengine, caplog):
    """Not only on the instance: whoever reads the worker's log sees them too."""
    qengine.registry.register_definition(
        WorkflowDefinition(
            name="flaky_log", version="1", initial_step="work", steps={"work": FailsTwice()}
        )
    )
    qengine.start_workflow("flaky_log")
    (run_id,) = qengine.take()
    caplog.set_level("WARNING", logger="django_workflows.engine")
    crash(qengine, run_id)
    assert qengine.take() == [run_id]
    assert qengine.process_run(run_id) == [run_id]
    qengine.process_run(run_id)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("WARNING", "the worker running step 'work' of instance") in [
        (level, text[: len("the worker running step 'work' of instance")])
        for level, text in messages
    ]
    assert any(
        level == "WARNING"
        and "raised; it will be retried (attempt 2): RuntimeError: failure 1" in text
        for level, text in messages
    )
    assert any(
        level == "ERROR" and "failed (attempt 3): RuntimeError: failure 2" in text
        for level, text in messages
    )
