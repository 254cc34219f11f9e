"""Worker processes for the tests that start real ones (tests/worker, tests/contrib,
tests/reliability): subprocesses on the test database, waiting on conditions with
deadlines, and the scenarios every backend runs."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from django_workflows import WorkflowStatus

ROOT = Path(__file__).resolve().parents[1]
# The worker_* workflows of testproject/testapp/workflows.py.
BRANCHES = ["left", "middle", "right"]


def wait_for(predicate, timeout=60.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user, host, port = settings["USER"], settings["HOST"] or "127.0.0.1", settings["PORT"] or 5432
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


class Process:
    """A command in its own process group; ``kill()`` ends it and its children."""

    def __init__(self, argv, env, log: Path):
        self.log = log
        self.log_file = log.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            argv,
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the cluster and its workers
        self.popen.wait(10)
        self.log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def manage(args, env, timeout=60.0) -> str:
    """Run a manage.py command to its end in a process of its own; returns its output."""
    done = subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def redis_client(url: str, variable: str):
    """A connected Redis client for ``url``; the test fails, naming ``variable`` (the
    environment variable that sets it), when no Redis answers there."""
    import pytest

    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"no Redis at {url} ({exc}); start redis-server or set {variable}")
    return client


# -- the scenarios every backend runs --------------------------------------------------


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


def kill_mid_step(engine, folder, lease_seconds):
    """SIGKILL the process running a step; the sweep re-queues the run when its lease
    expires and attempt 2 completes elsewhere. Returns the instance and the killed pid."""
    instance = engine.start_workflow("worker_crash", initial_data={"dir": str(folder)})
    started = folder / "hang.started"
    wait_for(started.exists, message="the step to start")
    worker_pid = int(started.read_text().split()[0])
    assert worker_pid != os.getpid()

    os.kill(worker_pid, signal.SIGKILL)  # the worker dies in the middle of the step

    instance = wait_status(engine, instance, WorkflowStatus.COMPLETED, timeout=lease_seconds + 60)
    run = instance.step_runs.get(step_name="hang")
    assert run.attempt == 2
    assert instance.context["hang"]["attempt"] == 2
    assert instance.context["hang"]["pid"] != worker_pid
    history = list(
        instance.events.filter(step_name="hang").values_list("payload__status", "payload__error")
    )
    assert history == [("retrying", "lease expired"), ("completed", "")]
    return instance, worker_pid
