"""Recovery on a real qcluster: a cluster killed with Redis (the next cluster's own
sweeper brings its task back), the sweep command and its django-q2 schedule, and many
parallel instances on three workers."""

import io
import json
import os
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models.functions import Now
from django.test import override_settings
from django.utils.module_loading import import_string
from django_q.models import OrmQ, Schedule

from django_workflows import WorkflowStatus
from django_workflows.engine import djangoq
from django_workflows.models import StepRun, WorkflowInstance

from .conftest import LEASE_SECONDS, manage, wait_for

pytestmark = pytest.mark.worker

DJANGOQ = {"ENGINE": "django_workflows.engine.djangoq.DjangoQExecutionEngine"}


def wait_status(instance_id, status, timeout=60):
    def current():
        return WorkflowInstance.objects.get(pk=instance_id).status

    wait_for(
        lambda: current() == status,
        timeout,
        message=f"instance {instance_id} to be {status} (is {current()})",
    )
    return WorkflowInstance.objects.get(pk=instance_id)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.usefixtures("transactional_db")
def test_killed_cluster_with_redis_loses_the_task_and_the_next_cluster_brings_it_back(
    redis_queue, start_process, tmp_path
):
    env = redis_queue.env
    first = start_process(["qcluster"], env, "qcluster-1")
    key = f"crash-{uuid.uuid4().hex}"
    # Started from a process of the cluster's site, so that the message is signed for it.
    data = json.dumps({"dir": str(tmp_path)})
    manage(["run_workflow", "worker_crash", "--data", data, "--business-key", key], env)
    instance = WorkflowInstance.objects.get(business_key=key)
    started = tmp_path / "hang.started"
    wait_for(started.exists, message="the step to start on the first cluster")
    worker_pid = int(started.read_text().split()[0])

    first.kill()  # SIGKILL to the whole process group: the cluster and all its workers

    wait_for(lambda: not alive(worker_pid), timeout=10, message="the worker to be gone")
    run = StepRun.objects.get(instance=instance, step_name="hang")
    assert (run.status, run.attempt) == ("running", 1)
    assert redis_queue.broker.queue_size() == 0  # Redis handed the task out: it is gone

    # A fresh cluster has nothing in its queue, but its own sweeper finds the expired
    # lease and sends the run again: no workflow_sweep process, no schedule.
    start_process(["qcluster"], env, "qcluster-2")
    instance = wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=LEASE_SECONDS + 60)
    assert not Schedule.objects.exists()

    run.refresh_from_db()
    assert (run.status, run.attempt) == ("completed", 2)
    assert instance.context["hang"]["attempt"] == 2
    assert instance.context["hang"]["pid"] != worker_pid
    assert started.read_text().count("\n") == 2  # ran twice, completed once
    assert (tmp_path / "hang.done").read_text().count("\n") == 1
    history = list(
        instance.events.filter(step_name="hang", type="StepExecuted")
        .order_by("id")
        .values_list("payload__status", "payload__attempt")
    )
    assert history == [("retrying", 1), ("completed", 2)]


def test_many_parallel_instances_on_three_workers_run_each_join_once(
    q_engine, cluster, sweeper, tmp_path
):
    count = 20
    branches = ("left", "middle", "right")
    folders = [tmp_path / str(i) for i in range(count)]
    instances = []
    for folder in folders:
        folder.mkdir()
        # meet=[]: the branches do not wait for each other, they just run in parallel.
        instances.append(
            q_engine.start_workflow("worker_fan_out", initial_data={"dir": str(folder), "meet": []})
        )

    for instance in instances:
        wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=60)

    runs = StepRun.objects.filter(instance__in=instances)
    assert runs.count() == count * 5
    assert set(runs.values_list("status", "attempt")) == {("completed", 1)}
    for instance, folder in zip(instances, folders, strict=True):
        assert runs.filter(instance=instance, step_name="join").count() == 1
        assert (folder / "join.done").read_text().count("\n") == 1
        for branch in (*branches, "start"):
            assert (folder / f"{branch}.done").read_text().count("\n") == 1
        instance.refresh_from_db()
        assert set(instance.context) == {"dir", "meet", "start", *branches, "join"}
        assert instance.events.filter(type="WorkflowCompleted").count() == 1
    pids = {
        instance.context[branch]["pid"]
        for instance in WorkflowInstance.objects.filter(pk__in=[i.pk for i in instances])
        for branch in branches
    }
    assert len(pids) >= 2, "all branches ran on one worker process"
    assert os.getpid() not in pids


# -- the sweep command ---------------------------------------------------------------


@pytest.mark.django_db
def test_install_schedule_creates_then_updates_one_schedule():
    out = io.StringIO()
    call_command("workflow_sweep", "--install-schedule", stdout=out)
    assert f"created django-q2 schedule '{djangoq.SCHEDULE_NAME}'" in out.getvalue()
    schedule = Schedule.objects.get()
    expected = (djangoq.SCHEDULE_NAME, djangoq.SWEEP, Schedule.MINUTES, 1, -1)
    fields = ("name", "func", "schedule_type", "minutes", "repeats")
    assert tuple(getattr(schedule, f) for f in fields) == expected
    assert import_string(schedule.func) is djangoq.sweep

    # Someone changed it in the admin; installing again puts it back, without a second row.
    Schedule.objects.filter(pk=schedule.pk).update(
        func="somewhere.else", schedule_type=Schedule.DAILY, minutes=30, repeats=0
    )
    out = io.StringIO()
    call_command("workflow_sweep", "--install-schedule", stdout=out)
    assert f"updated django-q2 schedule '{djangoq.SCHEDULE_NAME}'" in out.getvalue()
    schedule = Schedule.objects.get()
    assert tuple(getattr(schedule, f) for f in fields) == expected

    call_command("workflow_sweep", "--install-schedule", stdout=io.StringIO())
    assert Schedule.objects.count() == 1


@pytest.mark.django_db
def test_sweep_once_prints_how_many_runs_it_handled(q_engine, tmp_path):
    with override_settings(DJANGO_WORKFLOWS=DJANGOQ):
        out = io.StringIO()
        call_command("workflow_sweep", stdout=out)
        assert out.getvalue().strip() == "handled 0"

        instances = [
            q_engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
            for _ in range(3)
        ]
        assert OrmQ.objects.count() == 3  # no cluster: the messages wait
        # Their messages got lost long ago (STALE_QUEUED_SECONDS is 60 here).
        StepRun.objects.filter(instance__in=instances).update(queued_at=Now() - timedelta(hours=1))

        out = io.StringIO()
        call_command("workflow_sweep", stdout=out)

    assert out.getvalue().strip() == "handled 3"
    assert OrmQ.objects.count() == 6  # sent again


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [["--interval", "0"], ["--loop", "--interval", "0"], ["--loop", "--interval", "-1"]],
)
def test_sweep_interval_must_be_positive(args):
    with pytest.raises(
        CommandError, match=r"--interval: .* is not a number of seconds more than 0"
    ):
        call_command("workflow_sweep", *args, stdout=io.StringIO())


@pytest.mark.usefixtures("transactional_db")
def test_the_installed_schedule_runs_the_sweep_on_the_cluster(
    q_engine, worker_env, start_process, tmp_path
):
    """No sweeper process and the cluster's own sweeper turned off: the cluster's
    scheduler (a tick about every 30 s) runs the sweep from the schedule, and it fires
    the timer."""
    call_command("workflow_sweep", "--install-schedule", stdout=io.StringIO())
    first_run = Schedule.objects.get().next_run
    instance = q_engine.start_workflow("worker_timer", initial_data={"dir": str(tmp_path)})
    env = {**worker_env, "WORKFLOWS_CLUSTER_SWEEP_INTERVAL": "none"}
    start_process(["qcluster"], env, "qcluster")

    instance = wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=90)

    timer = instance.step_runs.get(step_name="wait")
    assert timer.status == "completed"
    assert timer.finished_at >= timer.due_at
    schedule = Schedule.objects.get()
    assert schedule.next_run > first_run  # the scheduler ran it and set the next run
    assert schedule.task  # the id of the task it queued
