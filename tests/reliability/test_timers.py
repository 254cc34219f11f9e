"""Timers against real processes: due while nothing runs, in UTC whatever the time zones,
and surviving a restart of every process."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.test import override_settings
from django.utils import timezone

from django_workflows import LocalExecutionEngine, WorkflowStatus, registry
from django_workflows.models import StepRun, WorkflowEvent
from testproject.testapp.models import SideEffect

from .conftest import sweep_args, wait_finished, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.worker]

#: Far from UTC, with a half-hour offset: a time-zone mix-up cannot go unnoticed.
LOCAL_ZONE = "Asia/Kolkata"
WORKER_TZ = "America/Los_Angeles"


def timer_run(instance_id) -> StepRun:
    return StepRun.objects.get(instance_id=instance_id, step_name="wait")


def wait_due_passed(run: StepRun, by=timedelta(0)):
    """Wait until the database clock is past the run's due time (plus ``by``)."""
    wait_for(
        lambda: StepRun.objects.filter(pk=run.pk, due_at__lt=Now() - by).exists(),
        timeout=30,
        message="the timer's due time to pass",
    )


def check_fired_once(instance_id):
    """The timer fired once, and the step after it ran once, never before the due time."""
    (run,) = StepRun.objects.filter(instance_id=instance_id, step_name="wait")
    assert run.status == "completed"
    assert run.finished_at >= run.due_at
    fired = WorkflowEvent.objects.filter(
        instance_id=instance_id, type="StepExecuted", step_name="wait"
    )
    assert list(fired.values_list("payload__status", flat=True)) == ["completed"]
    (end,) = SideEffect.objects.filter(instance_id=instance_id, step="end")
    assert end.started_at >= run.due_at
    assert StepRun.objects.filter(instance_id=instance_id, step_name="end").count() == 1
    return run


def test_timer_due_while_no_worker_runs_fires_once_when_they_come_back(
    fault_env, start_process, q_engine
):
    due = timezone.now() + timedelta(seconds=1)
    instance = q_engine.start_workflow(
        "reliability_timer_first", initial_data={"due": due.isoformat()}
    )
    run = timer_run(instance.pk)
    assert (run.status, run.due_at) == ("scheduled", due)
    wait_due_passed(run, by=timedelta(seconds=0.5))
    assert timer_run(instance.pk).status == "scheduled"  # nothing runs, nothing fired it

    # The workers come back; two sweepers race to fire the timer.
    processes = [
        start_process(["qcluster"], fault_env, "qcluster"),
        start_process(sweep_args(0.1), fault_env, "sweeper-1"),
        start_process(sweep_args(0.1), fault_env, "sweeper-2"),
    ]
    wait_finished([instance.pk], timeout=60, processes=processes)
    check_fired_once(instance.pk)


def test_due_times_are_stored_and_compared_in_utc(fault_env, start_process, q_engine):
    """The test process runs in a far-off TIME_ZONE; the due time travels as an ISO time
    with its +05:30 offset, the worker turns it into the timer's due time, and the sweep
    fires it on time: not hours early or late. (The worker gets TZ too, but Django resets a
    process's zone to its TIME_ZONE, which testproject keeps at UTC.)"""
    env = {**fault_env, "TZ": WORKER_TZ}
    processes = [
        start_process(["qcluster"], env, "qcluster"),
        start_process(sweep_args(0.1), env, "sweeper"),
    ]
    with override_settings(TIME_ZONE=LOCAL_ZONE):
        due = timezone.localtime(timezone.now() + timedelta(seconds=4))
        assert due.utcoffset() == timedelta(hours=5, minutes=30)
        instance = q_engine.start_workflow(
            "reliability_timer", initial_data={"due": due.isoformat()}
        )
        wait_finished([instance.pk], timeout=60, processes=processes)
        run = check_fired_once(instance.pk)

    assert run.due_at == due  # the same instant, stored as UTC
    assert run.due_at.utcoffset() == timedelta(0)
    late = (run.finished_at - due).total_seconds()
    assert 0 <= late < 2.5, f"the timer fired {late:.2f}s after its due time"


@pytest.mark.usefixtures("transactional_db")
def test_run_due_timers_in_a_non_utc_time_zone_fires_at_the_due_time():
    """The same with the local engine in this process: not before, and then at once."""
    engine = LocalExecutionEngine(registry)
    with override_settings(TIME_ZONE=LOCAL_ZONE):
        due = timezone.localtime(timezone.now() + timedelta(seconds=1.5))
        instance = engine.start_workflow(
            "reliability_timer_first", initial_data={"due": due.isoformat()}
        )
        assert engine.run_due_timers() == 0
        assert timer_run(instance.pk).status == "scheduled"

        def fired():
            engine.run_due_timers()
            return engine.get_instance(instance.pk).status == WorkflowStatus.COMPLETED

        wait_for(fired, timeout=30, message="the timer to fire")
    run = check_fired_once(instance.pk)
    assert run.due_at == due
    assert (run.finished_at - due).total_seconds() < 2.0


def test_timer_survives_a_restart_of_every_process(fault_env, start_process, q_engine):
    cluster = start_process(["qcluster"], fault_env, "qcluster")
    sweeper = start_process(sweep_args(0.1), fault_env, "sweeper")
    # Due 4 seconds after the worker starts the timer, however long the worker takes to start.
    instance = q_engine.start_workflow("reliability_timer", initial_data={"due_in": 4})
    wait_for(
        lambda: StepRun.objects.filter(instance=instance, step_name="wait").exists(),
        timeout=30,
        message="the worker to run the first step and schedule the timer",
    )
    run = timer_run(instance.pk)
    assert StepRun.objects.filter(pk=run.pk, due_at__gt=Now()).exists(), (
        "the timer was already due when the processes were to be stopped: a slow machine?"
    )

    cluster.kill()  # every process, before the due time
    sweeper.kill()
    wait_due_passed(run, by=timedelta(seconds=0.5))
    assert timer_run(instance.pk).status == "scheduled"

    restarted = timezone.now()
    processes = [
        start_process(["qcluster"], fault_env, "qcluster-2"),
        start_process(sweep_args(0.1), fault_env, "sweeper-2"),
    ]
    wait_finished([instance.pk], timeout=60, processes=processes)
    run = check_fired_once(instance.pk)
    assert run.finished_at >= restarted
