"""What ``benchmarks/run.py`` runs on a real ``qcluster``: its workflows and trivial tasks.

Worker processes import this module through the engine setting::

    WORKFLOWS_ENGINE_CLASS=testproject.testapp.bench_tasks.DjangoQEngine

``DjangoQEngine`` *is* ``DjangoQExecutionEngine`` (an alias, not a subclass): importing it
from here only registers the benchmark workflows in the project registry first, so the
cluster runs the stock engine on the same definitions the benchmark starts.

Two trivial tasks measure django-q2's own throughput, the baseline of the engine's. Both
are sent with ``save=False`` like the engine's messages:

- ``tick_row`` inserts one row (tag, time) into the scratch table ``bench_tick`` that the
  benchmark creates, in autocommit. That is about what django-q2's own bookkeeping
  costs when it keeps results (``save=True``: the monitor writes a ``Task`` row per task,
  after a look-up and the ``save_limit`` pruning), so it is the baseline the engine is
  held to. The rows tell the benchmark when the last task ran.
- ``tick`` only counts, in Redis (one ``INCR``, about 0.1 ms on 127.0.0.1): the broker
  and the cluster's processes alone, with no database work at all. The task that brings
  the counter to ``total`` stores the time it ran, so the end of the run is exact.
"""

from __future__ import annotations

import os
import time

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    WorkflowDefinition,
    registry,
)
from django_workflows.engine.djangoq import DjangoQExecutionEngine

DjangoQEngine = DjangoQExecutionEngine

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_redis = None


class Noop(BaseMachineStep):
    """Sets ``<step>`` to the pid of the process that ran it (the memory benchmark finds
    the worker process by it)."""

    def execute(self, context):
        context.set(context.step_name, os.getpid())


class Approve(BaseHumanStep):
    title = "Approve"


class Review(BaseHumanStep):
    title = "Review"
    candidate_groups = ("managers",)


def definitions() -> list[WorkflowDefinition]:
    """``bench_chain`` (10 machine steps), ``bench_one`` (1), ``bench_approval`` (one
    human step), ``bench_fan_out`` (3 branches and a join) and ``bench_review`` (one human
    step for the group ``managers``: the rows of the scale benchmark)."""
    return [
        WorkflowDefinition(
            name="bench_chain",
            version="1",
            initial_step="s1",
            steps={f"s{i}": Noop() for i in range(1, 11)},
            edges=[Edge(f"s{i}", f"s{i + 1}") for i in range(1, 10)],
        ),
        WorkflowDefinition(name="bench_one", version="1", initial_step="s1", steps={"s1": Noop()}),
        WorkflowDefinition(
            name="bench_approval", version="1", initial_step="approve", steps={"approve": Approve()}
        ),
        WorkflowDefinition(
            name="bench_fan_out",
            version="1",
            initial_step="start",
            steps={"start": Noop(), "a": Noop(), "b": Noop(), "c": Noop(), "join": Noop()},
            edges=[
                *(Edge("start", x) for x in "abc"),
                *(Edge(x, "join") for x in "abc"),
            ],
        ),
        WorkflowDefinition(
            name="bench_review", version="1", initial_step="review", steps={"review": Review()}
        ),
    ]


for _definition in definitions():
    registry.register_definition(_definition)


TICK_TABLE = "bench_tick"


def tick_row(tag: str) -> None:
    """The trivial task that writes: one row in ``bench_tick``, committed at once."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TICK_TABLE} (tag, at) VALUES (%s, %s)",  # noqa: S608 - a constant
            [tag, time.time()],
        )


def tick(key: str, total: int) -> None:
    """The trivial task that only counts: the last one records when it ran (``<key>:done``)."""
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(REDIS_URL)
    if _redis.incr(key) == total:
        _redis.set(f"{key}:done", repr(time.time()), ex=3600)
