"""A real django-q2 cluster (and the sweeper) in subprocesses, on the test database."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connection

from django_workflows import registry
from django_workflows.engine.djangoq import DjangoQExecutionEngine

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 3


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


@pytest.fixture
def worker_env(transactional_db, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "WORKFLOWS_ENGINE": "djangoq",
        "WORKFLOWS_LEASE_SECONDS": str(LEASE_SECONDS),
        "WORKFLOWS_STALE_QUEUED_SECONDS": "2",
        "Q_POLL": "0.05",
        "Q_WORKERS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture
def start_process(tmp_path):
    started = []

    def start(args, env, name):
        process = Process([sys.executable, "manage.py", *args], env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def cluster(worker_env, start_process):
    """A qcluster with three workers and the ORM broker."""
    return start_process(["qcluster"], worker_env, "qcluster")


@pytest.fixture
def sweeper(worker_env, start_process):
    """The short-interval sweeper: timers, expired leases, lost messages."""
    return start_process(["workflow_sweep", "--loop", "--interval", "0.25"], worker_env, "sweeper")


@pytest.fixture
def q_engine():
    return DjangoQExecutionEngine(registry)


@pytest.fixture
def redis_queue(worker_env):
    """A Redis broker queue of its own (a unique ``Q_NAME``) for the processes of one test.

    ``env`` starts cluster, sweeper and commands on it; ``broker`` looks into the queue.
    Messages are signed with the cluster name, so send them from a process started with
    ``env`` (``manage.py run_workflow``), not from the test process.
    """
    redis = pytest.importorskip("redis")
    from django_q.brokers.redis_broker import Redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    connection = redis.Redis.from_url(url)
    try:
        connection.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"no Redis at {url} ({exc}); start redis-server or set REDIS_URL")
    name = f"workflows-test-{uuid.uuid4().hex[:12]}"
    broker = Redis(list_key=name)
    broker.connection = connection
    env = {**worker_env, "Q_BROKER": "redis", "Q_NAME": name, "REDIS_URL": url}
    yield SimpleNamespace(name=name, env=env, broker=broker)
    keys = connection.keys(f"django_q:{name}:*")
    if keys:
        connection.delete(*keys)
    connection.close()


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
