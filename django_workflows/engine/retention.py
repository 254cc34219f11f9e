"""Retention: finished instances deleted with everything under them, in batches.

An instance goes with its whole sub-workflow tree (its children, theirs...): a tree is
purged when its root (an instance without a parent) finished before the cut-off and
every instance in it is finished; a tree with a member still active is left whole, so
no child is ever purged while its parent runs and no parent leaves a child behind.

Each batch is one short transaction: the batch's rows are locked (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL: a tree a transition holds is left for the next run), the
optional export runs, then every delete re-checks that the instances are still
finished. Rows go in a constant number of statements per batch: the step runs, tasks,
candidate groups, events, comments, signals and idempotency keys by their instance,
then the instances through Django's collector (so a project's own foreign keys to an
instance follow their ``on_delete``). Comment attachments are deleted from storage
after the commit. A purge stopped midway loses nothing: what committed is gone, the
rest is found again by the next run.

``manage.py workflow_purge`` drives ``purge()``; the sweep calls ``sweep()``, which does
one bounded batch when ``DJANGO_WORKFLOWS["RETENTION"]`` is set and nothing otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from ..conf import workflow_settings
from ..export import documents
from ..models import (
    Comment,
    HumanTask,
    HumanTaskGroup,
    IdempotencyKey,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowSignal,
    WorkflowStatus,
)

logger = logging.getLogger("django_workflows.engine")

FINISHED_STATUSES = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED)
#: Root instances one sweep purges at most (with their sub-workflow trees).
SWEEP_BATCH = 100
#: Sub-workflow nesting followed at most (a deeper tree is left alone).
MAX_DEPTH = 20

#: What a batch may export before its rows go: called with the batch's documents.
Exporter = Callable[[Iterator[dict[str, Any]]], object]


@dataclass
class PurgeResult:
    """What a purge did: instances deleted (sub-workflows included), trees skipped
    (a member still active, or held by a transition), attachment files deleted after
    the commit (a count: nothing grows with the number purged)."""

    purged: int = 0
    skipped: int = 0
    roots: int = 0
    files: int = 0

    def add(self, other: PurgeResult) -> None:
        self.purged += other.purged
        self.skipped += other.skipped
        self.roots += other.roots
        self.files += other.files


def retention_period(value: Any = None) -> timedelta | None:
    """``RETENTION`` as a ``timedelta`` (a number is days); ``ValueError`` if invalid,
    including a period too large to subtract from now (the system check E005 calls
    this too)."""
    value = workflow_settings.RETENTION if value is None else value
    if value is None:
        return None
    try:
        if isinstance(value, timedelta):
            period = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            period = timedelta(days=value)
        else:
            raise ValueError(f"{value!r} is not a timedelta or a number of days")
        if period <= timedelta(0):
            raise ValueError(f"{value!r} is not a positive period")
        timezone.now() - period  # the cut-off must be a date
    except OverflowError as exc:
        raise ValueError(f"{value!r} is too large a period (at most about 2000 years)") from exc
    return period


def candidates(finished_before: Any, workflow: str | None = None) -> QuerySet[WorkflowInstance]:
    """Root instances (no parent) finished before ``finished_before`` (a datetime or a
    database expression), of the workflow named ``workflow`` if given."""
    rows = WorkflowInstance.objects.filter(
        parent__isnull=True, status__in=FINISHED_STATUSES, finished_at__lt=finished_before
    )
    return rows.filter(definition__name=workflow) if workflow else rows


def root_batches(
    finished_before: Any, workflow: str | None = None, batch_size: int = 200
) -> Iterator[list[Any]]:
    """The candidates' ids, oldest first, ``batch_size`` at a time (keyset pages on
    ``(finished_at, id)``: deleting a page does not shift the next)."""
    rows = candidates(finished_before, workflow).order_by("finished_at", "id")
    last: tuple[datetime | None, Any] | None = None
    while True:
        page = rows
        if last is not None:
            page = rows.filter(Q(finished_at__gt=last[0]) | Q(finished_at=last[0], id__gt=last[1]))
        found = list(page.values_list("finished_at", "id")[:batch_size])
        if not found:
            return
        yield [pk for _, pk in found]
        last = found[-1]


def _trees(root_ids: list[Any]) -> tuple[dict[Any, Any], set[Any]]:
    """Each descendant of ``root_ids`` mapped to its root, and the roots whose tree has
    an active member or is too deep (to leave alone)."""
    root_of: dict[Any, Any] = {}
    bad: set[Any] = set()
    frontier = {pk: pk for pk in root_ids}
    for _ in range(MAX_DEPTH):
        if not frontier:
            return root_of, bad
        rows = WorkflowInstance.objects.filter(parent_id__in=list(frontier)).values_list(
            "id", "parent_id", "status"
        )
        next_frontier = {}
        for pk, parent_id, status in rows:
            root = frontier[parent_id]
            root_of[pk] = next_frontier[pk] = root
            if status not in FINISHED_STATUSES:
                bad.add(root)
        frontier = next_frontier
    bad.update(frontier.values())
    return root_of, bad


def purge_batch(
    root_ids: list[Any], finished_before: Any, export: Exporter | None = None
) -> PurgeResult:
    """Purge the trees of ``root_ids`` that still qualify, in one transaction; export
    them first with ``export`` (inside the transaction: a failed export deletes
    nothing)."""
    result = PurgeResult()
    with transaction.atomic():
        roots = set(
            candidates(finished_before)
            .filter(pk__in=root_ids)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        root_of, bad = _trees(list(roots))
        if root_of:
            locked = set(
                WorkflowInstance.objects.filter(pk__in=list(root_of), status__in=FINISHED_STATUSES)
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)
            )
            bad.update(root for pk, root in root_of.items() if pk not in locked)
        keep = roots - bad
        ids = [*keep, *(pk for pk, root in root_of.items() if root in keep)]
        result.skipped = len(root_ids) - len(keep)
        if not ids:
            return result
        if export is not None:
            export(documents(WorkflowInstance.objects.filter(pk__in=ids)))
        # Every statement re-checks the status: nothing active is ever deleted.
        alive = WorkflowInstance.objects.filter(pk__in=ids, status__in=FINISHED_STATUSES)
        files = list(
            Comment.objects.filter(instance__in=alive)
            .exclude(attachment="")
            .values_list("attachment", flat=True)
        )
        for model, lookup in (
            (HumanTaskGroup, "task__instance__in"),
            (Comment, "instance__in"),
            (WorkflowSignal, "instance__in"),
            (WorkflowEvent, "instance__in"),
            (IdempotencyKey, "instance__in"),
            (HumanTask, "instance__in"),
            (StepRun, "instance__in"),
        ):
            # One DELETE each, without loading rows (what the collector does for rows
            # nothing points to); the rows pointing to these are deleted just above.
            rows = model.objects.filter(**{lookup: alive})
            rows._raw_delete(rows.db)
        _, per_model = alive.delete()
        result.purged = per_model.get(WorkflowInstance._meta.label, 0)
        result.roots = len(keep)
        result.files = len(files)
        if files:
            transaction.on_commit(lambda: _delete_files(files))
    return result


def _delete_files(names: list[str]) -> None:
    storage = Comment._meta.get_field("attachment").storage
    for name in names:
        try:
            storage.delete(name)
        except Exception:
            logger.exception("deleting the purged comment attachment %s failed", name)


def purge(
    finished_before: Any,
    *,
    workflow: str | None = None,
    batch_size: int = 200,
    export: Exporter | None = None,
    progress: Callable[[PurgeResult], object] | None = None,
) -> PurgeResult:
    """Purge every tree whose root finished before ``finished_before``, ``batch_size``
    roots per transaction; ``progress(batch_result)`` after each batch."""
    total = PurgeResult()
    for batch in root_batches(finished_before, workflow, batch_size):
        done = purge_batch(batch, finished_before, export)
        total.add(done)
        if progress is not None:
            progress(done)
    if total.purged:
        logger.info("purged %d finished instances (%d skipped)", total.purged, total.skipped)
    return total


def plan(finished_before: Any, workflow: str | None = None) -> dict[str, Any]:
    """What ``purge()`` would delete, without deleting: root instances by workflow and
    version, and their sub-workflow instances (counted level by level)."""
    roots = candidates(finished_before, workflow)
    by_workflow = {
        (row["definition__name"], row["definition__version"]): row["n"]
        for row in roots.values("definition__name", "definition__version")
        .annotate(n=Count("id"))
        .order_by("definition__name", "definition__version")
    }
    children, level = 0, roots
    for _ in range(MAX_DEPTH):
        level = WorkflowInstance.objects.filter(parent__in=level.values("pk"))
        found = level.count()
        if not found:
            break
        children += found
    return {"roots": sum(by_workflow.values()), "children": children, "by_workflow": by_workflow}


_tally: ContextVar[PurgeResult | None] = ContextVar("retention_tally", default=None)


@contextmanager
def tally() -> Iterator[PurgeResult]:
    """What the sweeps run inside the block purged (``manage.py workflow_sweep`` prints
    it): ``with retention.tally() as purged: engine.run_due_timers()``."""
    result = PurgeResult()
    token = _tally.set(result)
    try:
        yield result
    finally:
        _tally.reset(token)


def sweep(limit: int | None = None) -> int:
    """One batch (``limit`` roots, default ``SWEEP_BATCH``) of the default retention, if
    ``DJANGO_WORKFLOWS["RETENTION"]`` is set (the sweep calls it); returns how many
    instances went. Nothing when it is None."""
    if workflow_settings.RETENTION is None:
        return 0
    try:
        period = retention_period()
    except ValueError as exc:  # manage.py check reports it (E005): no traceback per sweep
        logger.error(
            'DJANGO_WORKFLOWS["RETENTION"]: %s; nothing purged (system check '
            "django_workflows.E005)",
            exc,
        )
        return 0
    cutoff = Now() - period
    roots = list(
        candidates(cutoff)
        .order_by("finished_at")
        .values_list("pk", flat=True)[: limit or SWEEP_BATCH]
    )
    if not roots:
        return 0
    done = purge_batch(roots, cutoff)
    counting = _tally.get()
    if counting is not None:
        counting.add(done)
    return done.purged
