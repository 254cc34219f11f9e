"""Real workers of the optional backends, in subprocesses, on the test database and the
local Redis. Each test gets its own queue names, so concurrent runs do not meet."""

import os
import sys
import uuid

import pytest

from tests.processes import Process, database_url

LEASE_SECONDS = 3
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


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
