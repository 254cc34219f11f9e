"""Export and purge over 100,000 rows (20,000 finished instances, each with a step run,
a human task, its candidate group and an event; bulk-inserted like
benchmarks/run.py's fixture): memory and statements stay bounded per batch, not only
the result right. Marked ``slow`` (about 10-40 s per database); it runs in CI."""

import os
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from django_workflows.engine import retention
from django_workflows.export import documents, dumps
from django_workflows.models import (
    DefinitionVersion,
    HumanTask,
    HumanTaskGroup,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

INSTANCES = 20_000  # x 5 rows: 100,000
CHUNK = 500
#: Statements one export chunk may take: instances, runs, tasks, groups, events,
#: comments, signals, children.
EXPORT_PER_CHUNK = 8
#: Statements one purge batch may take (locks, the tree, the deletes, the collector's).
PURGE_PER_BATCH = 30
#: Resident memory the last 35 batches may add (a leak of one document per instance
#: would add far more).
GROWTH = 8 * 2**20


def insert(count: int) -> None:
    definition = DefinitionVersion.objects.create(name="bulk", version="1", graph={})
    finished = timezone.now() - timedelta(days=400)
    for first in range(0, count, 5000):
        numbers = range(first, min(first + 5000, count))
        with transaction.atomic():
            instances = WorkflowInstance.objects.bulk_create(
                [
                    WorkflowInstance(
                        definition=definition,
                        status="completed",
                        context={"n": n},
                        business_key=f"bulk-{n}",
                        finished_at=finished,
                    )
                    for n in numbers
                ],
                batch_size=1000,
            )
            runs = StepRun.objects.bulk_create(
                [
                    StepRun(instance=i, step_name="review", step_type="human", status="completed")
                    for i in instances
                ],
                batch_size=1000,
            )
            tasks = HumanTask.objects.bulk_create(
                [
                    HumanTask(
                        instance=i,
                        step_run=r,
                        step_name="review",
                        title="Review",
                        status="completed",
                    )
                    for i, r in zip(instances, runs, strict=True)
                ],
                batch_size=1000,
            )
            HumanTaskGroup.objects.bulk_create(
                [HumanTaskGroup(task=t, name="managers") for t in tasks], batch_size=1000
            )
            WorkflowEvent.objects.bulk_create(
                [
                    WorkflowEvent(instance=i, type="WorkflowCompleted", created_at=finished)
                    for i in instances
                ],
                batch_size=1000,
            )


@contextmanager
def counted():
    """Counts statements without keeping them (a list of 100k SQL strings would be the
    memory this test watches)."""
    calls = [0]

    def count(execute, sql, params, many, context):
        calls[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield calls


def resident() -> int:
    """The process's resident memory now, in bytes (Linux; tracemalloc would make the
    test five times slower)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def export_all(queryset, samples: list[int]) -> int:
    """Export, sampling the resident memory after each chunk; the documents' size."""
    size = 0
    for number, doc in enumerate(documents(queryset, chunk_size=CHUNK), start=1):
        size += len(dumps(doc))
        if number % CHUNK == 0:
            samples.append(resident())
    return size


def test_export_and_purge_100k_rows_in_bounded_batches():
    insert(INSTANCES)
    rows = WorkflowInstance.objects.all()
    assert rows.count() + StepRun.objects.count() + HumanTask.objects.count() == 3 * INSTANCES

    samples: list[int] = []
    with counted() as statements:
        size = export_all(rows, samples)

    chunks = INSTANCES // CHUNK
    assert size > INSTANCES * 500  # every document, with its rows
    assert statements[0] <= chunks * EXPORT_PER_CHUNK + 2, statements[0]
    # Constant memory: after the first chunks (the allocator's pools), 35 more chunks
    # (17,500 documents, some 30 MB of JSON) leave the resident size where it was.
    assert len(samples) == chunks
    assert samples[-1] - samples[4] < GROWTH, [s // 2**20 for s in samples]

    batches, per_batch, memory = [], [], []
    with counted() as statements:

        def progress(done):
            per_batch.append(statements[0] - sum(per_batch))
            batches.append(done.purged)
            memory.append(resident())

        result = retention.purge(
            timezone.now() - timedelta(days=30), batch_size=CHUNK, progress=progress
        )

    assert result.purged == INSTANCES and result.skipped == 0
    assert batches == [CHUNK] * chunks
    assert max(per_batch[1:]) <= PURGE_PER_BATCH, per_batch
    assert len(set(per_batch[1:])) == 1  # the same statements for every batch
    assert memory[-1] - memory[4] < GROWTH, [s // 2**20 for s in memory]
    for model in (WorkflowInstance, StepRun, HumanTask, HumanTaskGroup, WorkflowEvent):
        assert not model.objects.exists(), model
