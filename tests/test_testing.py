"""django_workflows.testing: the helpers for the tests of users' own workflows."""

from datetime import timedelta

import pytest

from django_workflows import WorkflowStatus
from django_workflows.models import StepRun
from django_workflows.testing import InProcessWorker, advance_time

pytestmark = pytest.mark.django_db


def test_advance_time_fires_the_timers_due_within_the_delta_only(engine):
    instance = engine.start_workflow("timer")
    timer = instance.step_runs.get(status="scheduled")
    due = timer.due_at
    assert advance_time(timedelta(seconds=1), engine) == 0  # not due yet
    timer.refresh_from_db()
    assert timer.status == "scheduled"
    assert timer.due_at < due  # the clock moved, the timer with it

    assert advance_time(timedelta(days=1), engine, instance=instance) == 1
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


def test_in_process_worker_runs_the_queue_when_the_test_says(wf_registry):
    worker = InProcessWorker(wf_registry)
    instance = worker.start_workflow("notifications")
    assert instance.status == WorkflowStatus.RUNNING
    assert len(worker.queued) == 1  # "start", waiting for the test
    assert not StepRun.objects.filter(instance=instance, status="completed").exists()

    assert worker.run_next() is True
    assert len(worker.queued) == 3  # the three parallel branches
    assert worker.run() == 4  # the branches, then the join
    assert worker.run_next() is False
    assert worker.get_instance(instance.id).status == WorkflowStatus.COMPLETED
