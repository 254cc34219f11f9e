"""Real workers of the optional backends, in subprocesses, on the test database and the
local Redis. Each test gets its own queue names, so concurrent runs do not meet."""

import os
import signal
import sys
import uuid

import pytest

from django_workflows import WorkflowStatus
from tests.worker.conftest import Process, database_url, wait_for

LEASE_SECONDS = 3
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The worker_* workflows of testproject/testapp/workflows.py.
BRANCHES = ["left", "middle", "right"]


def manage(*args):
    return [sys.executable, "manage.py", *args]


@pytest.fixture
def unique():
    """A name no other test or test run uses: for queues."""
    return f"dw-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def contrib_env(transactional_db):
    """The environment of worker processes: the test database, short leases."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "WORKFLOWS_LEASE_SECONDS": str(LEASE_SECONDS),
        "WORKFLOWS_STALE_QUEUED_SECONDS": "2",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def start_process(tmp_path):
    """Start commands; at teardown kill them all and print their logs (shown on failure)."""
    started = []

    def start(argv, env, name):
        process = Process(argv, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
    for process in started:
        print(f"----- {process.log.name} -----\n{process.output()}")  # noqa: T201


@pytest.fixture
def redis_keys():
    """Delete, at teardown, the Redis keys matching the patterns a test adds."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    patterns = []
    yield patterns
    for pattern in patterns:
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    client.close()


# -- the scenarios every backend runs ------------------------------------------------------


def wait_status(engine, instance, status, timeout=60.0):
    wait_for(
        lambda: engine.get_instance(instance.id).status == status,
        timeout,
        message=f"instance to be {status} (is {engine.get_instance(instance.id).status})",
    )
    return engine.get_instance(instance.id)


def fan_out(engine, folder):
    """Three branches that each wait until all three have started, then a join.
    Returns the completed instance; the branches ran at the same time."""
    instance = engine.start_workflow(
        "worker_fan_out", initial_data={"dir": str(folder), "meet": BRANCHES}
    )
    assert instance.status == WorkflowStatus.RUNNING  # start returns before the steps run
    instance = wait_status(engine, instance, WorkflowStatus.COMPLETED)
    assert instance.step_runs.filter(step_name="join").count() == 1
    assert (folder / "join.done").read_text().count("\n") == 1
    assert os.getpid() not in {instance.context[b]["pid"] for b in BRANCHES}
    return instance


def approval(engine, folder):
    """A machine step, a human approval, a machine step."""
    instance = engine.start_workflow("worker_approval", initial_data={"dir": str(folder)})
    instance = wait_status(engine, instance, WorkflowStatus.WAITING)
    assert instance.current_step == "approve"
    assert instance.context["start"]["pid"] != os.getpid()

    instance = engine.complete_human_task(instance.id, "approve", None, {"ok": True})
    assert instance.status == WorkflowStatus.RUNNING  # "end" is queued for a worker
    instance = wait_status(engine, instance, WorkflowStatus.COMPLETED)
    assert instance.context["ok"] is True
    assert instance.context["end"]["pid"] != os.getpid()
    return instance


def kill_mid_step(engine, folder):
    """SIGKILL the process running a step; the sweep re-queues the run when its lease
    expires and attempt 2 completes elsewhere. Returns the instance and the killed pid."""
    instance = engine.start_workflow("worker_crash", initial_data={"dir": str(folder)})
    started = folder / "hang.started"
    wait_for(started.exists, message="the step to start")
    worker_pid = int(started.read_text().split()[0])
    assert worker_pid != os.getpid()

    os.kill(worker_pid, signal.SIGKILL)  # the worker dies in the middle of the step

    instance = wait_status(engine, instance, WorkflowStatus.COMPLETED, timeout=LEASE_SECONDS + 60)
    run = instance.step_runs.get(step_name="hang")
    assert run.attempt == 2
    assert instance.context["hang"]["attempt"] == 2
    assert instance.context["hang"]["pid"] != worker_pid
    history = list(
        instance.events.filter(step_name="hang").values_list("payload__status", "payload__error")
    )
    assert history == [("retrying", "lease expired"), ("completed", "")]
    return instance, worker_pid
