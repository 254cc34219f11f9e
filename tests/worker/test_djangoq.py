"""The django-q2 backend against a real qcluster: parallel workers, crashes, lost messages."""

import io
import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django_q.models import OrmQ

from django_workflows import WorkflowStatus
from django_workflows.models import StepRun

from ..processes import kill_mid_step, wait_status
from .conftest import LEASE_SECONDS

pytestmark = pytest.mark.worker

DJANGOQ = {"ENGINE": "django_workflows.engine.djangoq.DjangoQExecutionEngine"}


def test_start_returns_at_once_and_parallel_branches_run_on_different_workers(
    q_engine, cluster, tmp_path
):
    branches = ["left", "middle", "right"]
    instance = q_engine.start_workflow(
        "worker_fan_out", initial_data={"dir": str(tmp_path), "meet": branches}
    )
    assert instance.status == WorkflowStatus.RUNNING
    assert not StepRun.objects.filter(instance=instance, status="completed").exists()

    instance = wait_status(q_engine, instance, WorkflowStatus.COMPLETED)

    # Each branch waited for the other two to start: they ran at the same time,
    # so on three different worker processes.
    pids = {instance.context[b]["pid"] for b in branches}
    assert len(pids) == 3
    assert os.getpid() not in pids
    assert StepRun.objects.filter(instance=instance, step_name="join").count() == 1
    assert (tmp_path / "join.done").read_text().count("\n") == 1


def test_human_approval_with_the_worker(q_engine, cluster, tmp_path):
    instance = q_engine.start_workflow("worker_approval", initial_data={"dir": str(tmp_path)})
    instance = wait_status(q_engine, instance, WorkflowStatus.WAITING)
    assert instance.current_step == "approve"

    instance = q_engine.complete_human_task(instance.id, "approve", None, {"ok": True})
    assert instance.status == WorkflowStatus.RUNNING  # "end" is queued for the worker
    instance = wait_status(q_engine, instance, WorkflowStatus.COMPLETED)
    assert instance.context["ok"] is True


def test_worker_killed_mid_step_is_recovered_by_the_sweep(q_engine, cluster, sweeper, tmp_path):
    kill_mid_step(q_engine, tmp_path, LEASE_SECONDS)


def test_step_killing_its_own_worker_fails_after_the_crash_limit(
    q_engine, worker_env, start_process, tmp_path
):
    """Only qcluster (it sweeps by itself), CRASH_LIMIT 1: the step that SIGKILLs its
    worker is re-run once, then the instance fails saying so; it never loops."""
    start_process(["qcluster"], {**worker_env, "WORKFLOWS_CRASH_LIMIT": "1"}, "qcluster")
    instance = q_engine.start_workflow("worker_suicide", initial_data={"dir": str(tmp_path)})

    instance = wait_status(
        q_engine, instance, WorkflowStatus.FAILED, timeout=2 * LEASE_SECONDS + 60
    )

    run = instance.step_runs.get(step_name="die")
    assert (run.status, run.attempt, run.crashes) == ("failed", 2, 2)
    assert "step 'die' keeps killing its worker" in instance.error
    assert "CRASH_LIMIT is 1" in instance.error
    assert (tmp_path / "die.started").read_text().count("\n") == 2  # ran twice, not forever


def test_lost_messages_are_sent_again_by_the_sweep(q_engine, worker_env, start_process, tmp_path):
    # No cluster yet: the messages wait in the ORM queue. Lose them all.
    instances = [
        q_engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path / str(i))})
        for i in range(5)
    ]
    for i in range(5):
        (tmp_path / str(i)).mkdir()
    assert OrmQ.objects.count() == 5
    OrmQ.objects.all().delete()

    start_process(["qcluster"], worker_env, "qcluster")
    start_process(["workflow_sweep", "--loop", "--interval", "0.25"], worker_env, "sweeper")

    for instance in instances:
        wait_status(q_engine, instance, WorkflowStatus.COMPLETED)
    assert StepRun.objects.filter(status="completed").count() == 25


def test_timer_fires_within_the_sweep_interval(q_engine, cluster, sweeper, tmp_path):
    instance = q_engine.start_workflow("worker_timer", initial_data={"dir": str(tmp_path)})
    instance = wait_status(q_engine, instance, WorkflowStatus.COMPLETED)

    timer = instance.step_runs.get(step_name="wait")
    late = (timer.finished_at - timer.due_at).total_seconds()
    assert 0 <= late < 2.0, f"timer fired {late:.2f}s after its due time"


def test_run_workflow_wait_shows_progress_until_done(cluster, tmp_path):
    out = io.StringIO()
    with override_settings(DJANGO_WORKFLOWS=DJANGOQ):
        call_command(
            "run_workflow",
            "worker_chain",
            "--data",
            f'{{"dir": "{tmp_path}"}}',
            "--wait",
            "--timeout",
            "60",
            stdout=out,
        )
    text = out.getvalue()
    assert "status: completed" in text
    assert "5/5 steps done" in text


@pytest.mark.usefixtures("transactional_db")
def test_run_workflow_wait_times_out_with_an_error(tmp_path):
    # No cluster: nothing runs, so --wait gives up after its timeout with a non-zero exit.
    out = io.StringIO()
    with (
        override_settings(DJANGO_WORKFLOWS=DJANGOQ),
        pytest.raises(CommandError, match="still running"),
    ):
        call_command(
            "run_workflow",
            "worker_chain",
            "--data",
            f'{{"dir": "{tmp_path}"}}',
            "--wait",
            "--timeout",
            "1",
            stdout=out,
        )
    assert "0/5 steps done" in out.getvalue()


@pytest.mark.usefixtures("transactional_db")
def test_redis_broker_loses_messages_and_the_sweep_recovers(worker_env, start_process, tmp_path):
    redis = pytest.importorskip("redis")
    from django_q.brokers.redis_broker import Redis

    from django_workflows import registry
    from django_workflows.engine.djangoq import DjangoQExecutionEngine

    queue = f"workflows-test-{os.getpid()}"
    env = {**worker_env, "Q_BROKER": "redis", "Q_NAME": queue}
    broker = Redis(list_key=queue)
    broker.connection = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    engine = DjangoQExecutionEngine(registry, broker=broker)

    instances = []
    for i in range(5):
        Path(tmp_path / str(i)).mkdir()
        instances.append(
            engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path / str(i))})
        )
    assert broker.queue_size() == 5
    broker.purge_queue()  # the broker loses every message

    start_process(["qcluster"], env, "qcluster")
    start_process(["workflow_sweep", "--loop", "--interval", "0.25"], env, "sweeper")
    for instance in instances:
        wait_status(engine, instance, WorkflowStatus.COMPLETED)
    assert StepRun.objects.filter(status="completed").count() == 25
