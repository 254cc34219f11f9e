"""A real django-q2 cluster (and the sweeper) in subprocesses, on the test database."""

import os
import sys
import uuid
from types import SimpleNamespace

import pytest

from django_workflows import registry
from django_workflows.engine.djangoq import DjangoQExecutionEngine

from ..processes import Process, database_url, manage, redis_client, wait_for

__all__ = ["LEASE_SECONDS", "manage", "wait_for"]

LEASE_SECONDS = 3


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
    pytest.importorskip("redis")
    from django_q.brokers.redis_broker import Redis

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    connection = redis_client(url, "REDIS_URL")
    name = f"workflows-test-{uuid.uuid4().hex[:12]}"
    broker = Redis(list_key=name)
    broker.connection = connection
    env = {**worker_env, "Q_BROKER": "redis", "Q_NAME": name, "REDIS_URL": url}
    yield SimpleNamespace(name=name, env=env, broker=broker)
    keys = connection.keys(f"django_q:{name}:*")
    if keys:
        connection.delete(*keys)
    connection.close()
