"""Faults under a real qcluster: killed workers, dropped connections, lost and duplicated
messages. Every run records each execution of a step body in ``testapp.SideEffect``."""

import random
import time
import uuid

import pytest
from django.db import connection
from django.db.models import Count

from django_workflows.engine.djangoq import DjangoQExecutionEngine
from django_workflows.models import StepRun, WorkflowEvent
from testproject.testapp.engines import DuplicatingDjangoQEngine
from testproject.testapp.models import SideEffect

from ..processes import redis_client
from .conftest import (
    LEASE_SECONDS,
    active_count,
    check_side_effects,
    kill,
    no_overlap,
    pid_mid_step,
    sweep_args,
    wait_finished,
)

pytestmark = [pytest.mark.reliability, pytest.mark.worker]

CHAIN = ("s1", "s2", "s3")
FAN = ("start", "left", "right", "join")


def start_many(engine, name, count, **data):
    return [engine.start_workflow(name, initial_data=dict(data)).pk for _ in range(count)]


def lease_expired_events(ids):
    return WorkflowEvent.objects.filter(
        instance_id__in=ids,
        type="StepExecuted",
        payload__status="retrying",
        payload__error="lease expired",
    )


# -- 1. workers killed in the middle of a step -------------------------------------------------


def test_workers_killed_mid_step_every_second(fault_env, start_process, q_engine):
    instances = 200
    max_kills = 30
    cluster = start_process(["qcluster"], fault_env, "qcluster")
    sweeper = start_process(sweep_args(), fault_env, "sweeper")
    ids = start_many(q_engine, "reliability_chain", instances)

    killed: list[int] = []
    next_kill = time.monotonic() + 1.0
    deadline = time.monotonic() + 240
    while active_count(ids) and time.monotonic() < deadline:
        if len(killed) < max_kills and time.monotonic() >= next_kill:
            pid = pid_mid_step(cluster.popen.pid)
            if pid is not None:
                kill(pid)
                killed.append(pid)
                next_kill = time.monotonic() + random.uniform(0.5, 1.0)
        time.sleep(0.02)

    wait_finished(ids, timeout=60 + 4 * LEASE_SECONDS, processes=[cluster, sweeper])
    assert len(killed) >= 5, f"only {len(killed)} kills landed: the run was too short to test"

    # Each step's committed attempt ran to its end; each attempt ran exactly once.
    cut_short = check_side_effects(ids, CHAIN)
    # Each kill cut exactly one execution short, and only the kills did.
    assert sorted(row.pid for row in cut_short) == sorted(killed)
    # Each execution cut short shows in the history as a re-run after its lease expired.
    expired = {
        (str(i), step, attempt)
        for i, step, attempt in lease_expired_events(ids).values_list(
            "instance_id", "step_name", "payload__attempt"
        )
    }
    for row in cut_short:
        assert (str(row.instance_id), row.step, row.attempt) in expired, row
    # A run claimed n times has n - 1 "retrying" events before its "completed" one.
    for run in StepRun.objects.filter(instance_id__in=ids, attempt__gt=1):
        statuses = list(
            WorkflowEvent.objects.filter(
                instance_id=run.instance_id, step_name=run.step_name, type="StepExecuted"
            )
            .order_by("id")
            .values_list("payload__status", flat=True)
        )
        assert statuses == ["retrying"] * (run.attempt - 1) + ["completed"], (run, statuses)


# -- 2. PostgreSQL connections dropped under the workers ---------------------------------------


def terminate_backends() -> int:
    """Drop every connection to the test database but the test process's own ones, from
    a connection of its own (as a database restart or a failover would)."""
    import psycopg

    settings = connection.settings_dict
    ours = connection.connection.info.backend_pid
    with psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND pid <> %s",
            [settings["NAME"], ours],
        ).fetchall()
    return sum(1 for (done,) in rows if done)


@pytest.mark.postgres
def test_database_connections_dropped_mid_run(fault_env, start_process, q_engine):
    cluster = start_process(["qcluster"], fault_env, "qcluster")
    sweeper = start_process(sweep_args(), fault_env, "sweeper")
    ids = start_many(q_engine, "reliability_chain", 120)
    connection.ensure_connection()

    dropped = []
    next_drop = time.monotonic() + 1.0
    deadline = time.monotonic() + 120
    while len(dropped) < 5 and active_count(ids) and time.monotonic() < deadline:
        if time.monotonic() >= next_drop:
            dropped.append(terminate_backends())
            next_drop = time.monotonic() + 1.5
        time.sleep(0.05)
    assert len(dropped) >= 3, f"the run ended after {len(dropped)} drops: too short to test"
    assert all(dropped), f"a drop found no connection of the workers to end: {dropped}"

    # The workers reconnect and go on; runs cut off are re-run once their lease expires.
    wait_finished(ids, timeout=90 + 4 * LEASE_SECONDS, processes=[cluster, sweeper])
    # A drop may fail a step's own write of its SideEffect row: at most once per attempt.
    check_side_effects(ids, CHAIN, every_attempt=False)
    assert not StepRun.objects.filter(
        instance_id__in=ids, status__in=["queued", "running"]
    ).exists()


# -- 3. the broker loses messages mid-run -------------------------------------------------------


@pytest.fixture
def redis_db(fault_env, monkeypatch):
    """A Redis database of its own (``RELIABILITY_REDIS_URL``, default db 13) that the
    test may flush, and a queue name of its own."""
    import os

    pytest.importorskip("redis")
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf

    url = os.environ.get("RELIABILITY_REDIS_URL", "redis://127.0.0.1:6379/13")
    client = redis_client(url, "RELIABILITY_REDIS_URL")
    client.flushdb()
    name = f"reliability-{uuid.uuid4().hex[:12]}"
    broker = Redis(list_key=name)
    broker.connection = client
    # Messages are signed with the cluster name: sign ours as the cluster's.
    monkeypatch.setattr(Conf, "PREFIX", name)
    env = {**fault_env, "Q_BROKER": "redis", "Q_NAME": name, "REDIS_URL": url}
    yield env, broker, client
    client.flushdb()
    client.close()


def test_broker_loses_messages_mid_run(redis_db, start_process):
    env, broker, client = redis_db
    engine = DjangoQExecutionEngine(broker=broker)
    cluster = start_process(["qcluster"], env, "qcluster")
    sweeper = start_process(sweep_args(), env, "sweeper")
    wait_run = 60
    ids = start_many(engine, "reliability_fan", 150)

    lost = []
    next_flush = time.monotonic() + 1.0
    deadline = time.monotonic() + wait_run
    while len(lost) < 4 and active_count(ids) and time.monotonic() < deadline:
        if time.monotonic() >= next_flush:
            with client.pipeline(transaction=True) as pipe:  # count and lose, atomically
                pipe.llen(broker.list_key)
                pipe.flushdb()
                waiting, _ = pipe.execute()
            lost.append(waiting)
            next_flush = time.monotonic() + 1.0
        time.sleep(0.05)
    assert sum(lost) > 0, f"no message was waiting when the broker lost them: {lost}"

    wait_finished(ids, timeout=90, processes=[cluster, sweeper])
    check_side_effects(ids, FAN)


# -- 4. every message delivered twice ----------------------------------------------------------


def test_every_message_delivered_twice(fault_env, start_process):
    from django_q.models import OrmQ

    from django_workflows import registry

    env = {
        **fault_env,
        "WORKFLOWS_ENGINE_CLASS": "testproject.testapp.engines.DuplicatingDjangoQEngine",
        # No lease runs out here: a re-run after one may overlap the slow first execution.
        "WORKFLOWS_LEASE_SECONDS": "15",
    }
    engine = DuplicatingDjangoQEngine(registry)
    count = 100
    ids = []
    for i in range(count):
        # A third of them fail "right" once: its retry is delivered twice too.
        data = {"fail_first": ["right"]} if i % 3 == 0 else {}
        ids.append(engine.start_workflow("reliability_fan", initial_data=data).pk)
    assert OrmQ.objects.count() == 2 * count  # the start's message went out twice

    cluster = start_process(["qcluster"], env, "qcluster")
    sweeper = start_process(sweep_args(), env, "sweeper")
    wait_finished(ids, timeout=120, processes=[cluster, sweeper])

    # Exactly one execution per attempt (check_side_effects), none cut short...
    assert check_side_effects(ids, FAN) == []
    # ...and the executions of a run never overlap in time.
    no_overlap(SideEffect.objects.filter(instance_id__in=ids))
    retried = StepRun.objects.filter(instance_id__in=ids, step_name="right", attempt__gte=2)
    assert retried.count() >= len(range(0, count, 3))
    per_attempt = (
        SideEffect.objects.filter(instance_id__in=ids)
        .values("instance_id", "step", "attempt")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert not per_attempt.exists(), list(per_attempt[:5])
