"""An instance's full history as one JSON-ready document: used by the admin's export
link, the API's ``GET instances/{id}/export/``, ``manage.py workflow_export`` and
``manage.py workflow_purge --export``.

``documents(queryset)`` streams many instances in chunks: one query for a chunk of
instances and one per kind of row under them (step runs, tasks with their candidate
groups, events, comments, signals, sub-workflow children), whatever the chunk holds,
so memory and statements grow with the chunk size, never with the number exported.
Read-only: nothing here writes a row.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.db.models import Prefetch, QuerySet

from .models import (
    Comment,
    HumanTask,
    HumanTaskGroup,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowSignal,
)

#: The document's ``format``: bumped when a key changes meaning or goes away.
FORMAT = "django_workflows.export/1"
#: Instances read per query (and prefetched together) by ``documents()``.
CHUNK_SIZE = 200
#: The columns of the CSV export (one row per instance; ``context`` as JSON).
CSV_COLUMNS = (
    "id",
    "workflow",
    "version",
    "status",
    "business_key",
    "started_by",
    "started_at",
    "finished_at",
    "failed_step",
    "error",
    "parent",
    "step_runs",
    "tasks",
    "events",
    "comments",
    "signals",
    "context",
)


def export_queryset(
    queryset: QuerySet[WorkflowInstance] | None = None,
) -> QuerySet[WorkflowInstance]:
    """``queryset`` (default: every instance) with what a document reads, prefetched."""
    queryset = WorkflowInstance.objects.all() if queryset is None else queryset
    tasks = (
        HumanTask.objects.select_related(
            "assignee", "claimed_by", "completed_by", "completed_on_behalf_of"
        )
        .prefetch_related(
            Prefetch("candidate_groups", queryset=HumanTaskGroup.objects.order_by("name"))
        )
        .order_by("created_at", "id")
    )
    return queryset.select_related("definition", "started_by", "parent_step_run").prefetch_related(
        Prefetch("step_runs", queryset=StepRun.objects.order_by("id")),
        Prefetch("human_tasks", queryset=tasks),
        Prefetch("events", queryset=WorkflowEvent.objects.order_by("id")),
        Prefetch(
            "comments",
            queryset=Comment.objects.select_related("author").order_by("created_at", "id"),
        ),
        Prefetch(
            "signals",
            queryset=WorkflowSignal.objects.select_related("sent_by").order_by("id"),
        ),
        Prefetch(
            "children",
            queryset=WorkflowInstance.objects.only("id", "parent_id").order_by("started_at", "id"),
            to_attr="export_children",
        ),
    )


def documents(
    queryset: QuerySet[WorkflowInstance] | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[dict[str, Any]]:
    """The document of each instance of ``queryset``, streamed ``chunk_size`` at a time."""
    rows = export_queryset(queryset)
    if not rows.query.order_by:
        rows = rows.order_by("started_at", "id")
    for instance in rows.iterator(chunk_size=chunk_size):
        yield document(instance)


def instance_document(instance_id: Any) -> dict[str, Any]:
    """One instance's document (``WorkflowInstance.DoesNotExist`` if there is none)."""
    return document(export_queryset().get(pk=instance_id))


def document(instance: WorkflowInstance) -> dict[str, Any]:
    """The full history of ``instance``, as plain JSON values (ids and times as strings).

    Reads the relations ``export_queryset()`` prefetches (else one query each)."""
    children = getattr(instance, "export_children", None)
    if children is None:
        children = instance.children.only("id").order_by("started_at", "id")
    parent_run = instance.parent_step_run
    return {
        "format": FORMAT,
        "id": str(instance.pk),
        "workflow": instance.definition.name,
        "version": instance.definition.version,
        "status": instance.status,
        "business_key": instance.business_key,
        "started_by": _user(instance.started_by),
        "started_at": _time(instance.started_at),
        "updated_at": _time(instance.updated_at),
        "finished_at": _time(instance.finished_at),
        "current_steps": instance.current_steps,
        "failed_step": instance.failed_step,
        "error": instance.error,
        "error_traceback": instance.error_traceback,
        "context": instance.context,
        "parent": _id(instance.parent_id),
        "parent_step": parent_run.step_name if parent_run is not None else None,
        "parent_item": instance.parent_item,
        "children": [str(child.pk) for child in children],
        "step_runs": [_run(run) for run in instance.step_runs.all()],
        "tasks": [_task(task) for task in instance.human_tasks.all()],
        "events": [
            {
                "id": event.pk,
                "type": event.type,
                "step": event.step_name,
                "payload": event.payload,
                "created_at": _time(event.created_at),
            }
            for event in instance.events.all()
        ],
        "comments": [
            {
                "id": comment.pk,
                "task": comment.task_id,
                "author": _user(comment.author),
                "text": comment.text,
                "attachment": comment.attachment.name or None,
                "created_at": _time(comment.created_at),
            }
            for comment in instance.comments.all()
        ],
        "signals": [
            {
                "id": signal.pk,
                "name": signal.name,
                "data": signal.data,
                "state": signal.state,
                "idempotency_key": signal.idempotency_key,
                "sent_by": _user(signal.sent_by),
                "consumed_by_step_run": signal.consumed_by_step_run_id,
                "created_at": _time(signal.created_at),
                "consumed_at": _time(signal.consumed_at),
                "discarded_at": _time(signal.discarded_at),
            }
            for signal in instance.signals.all()
        ],
    }


def _run(run: StepRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "step": run.step_name,
        "type": run.step_type,
        "status": run.status,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "crashes": run.crashes,
        "worker": run.worker,
        "input": run.input,
        "changes": run.changes,
        "error": run.error,
        "traceback": run.traceback,
        "created_at": _time(run.created_at),
        "queued_at": _time(run.queued_at),
        "due_at": _time(run.due_at),
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
    }


def _task(task: HumanTask) -> dict[str, Any]:
    return {
        "id": task.pk,
        "step_run": task.step_run_id,
        "step": task.step_name,
        "title": task.title,
        "summary": task.summary,
        "status": task.status,
        "assignee": _user(task.assignee),
        "candidate_groups": [group.name for group in task.candidate_groups.all()],
        "claimed_by": _user(task.claimed_by),
        "completed_by": _user(task.completed_by),
        "completed_on_behalf_of": _user(task.completed_on_behalf_of),
        "result": task.result,
        "close_reason": task.close_reason,
        "slot": task.slot,
        "reminders_sent": task.reminders_sent,
        "created_at": _time(task.created_at),
        "due_at": _time(task.due_at),
        "escalated_at": _time(task.escalated_at),
        "completed_at": _time(task.completed_at),
    }


def _user(user: Any) -> dict[str, Any] | None:
    """A user as ``{"id", "username"}``: the name stays readable if the user goes."""
    if user is None:
        return None
    return {"id": user.pk, "username": user.get_username()}


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _id(value: Any) -> str | None:
    return str(value) if value is not None else None


# -- formats -------------------------------------------------------------------------


def dumps(doc: dict[str, Any]) -> str:
    """A document as one line of JSON (JSON lines)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def csv_row(doc: dict[str, Any]) -> list[Any]:
    """A document as one CSV row of ``CSV_COLUMNS``: the instance and its row counts."""
    user = doc["started_by"]
    return [
        doc["id"],
        doc["workflow"],
        doc["version"],
        doc["status"],
        doc["business_key"],
        user["username"] if user else "",
        doc["started_at"] or "",
        doc["finished_at"] or "",
        doc["failed_step"],
        doc["error"],
        doc["parent"] or "",
        len(doc["step_runs"]),
        len(doc["tasks"]),
        len(doc["events"]),
        len(doc["comments"]),
        len(doc["signals"]),
        json.dumps(doc["context"], ensure_ascii=False, separators=(",", ":")),
    ]


def write(docs: Iterable[dict[str, Any]], out: Any, fmt: str = "jsonl") -> int:
    """Write ``docs`` to the text stream ``out`` as ``jsonl`` or ``csv`` (with a header);
    returns how many were written."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: jsonl or csv")
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for doc in docs:
            writer.writerow(csv_row(doc))
            count += 1
        return count
    for doc in docs:
        out.write(dumps(doc) + "\n")
        count += 1
    return count


def to_csv(docs: Iterable[dict[str, Any]]) -> str:
    """``docs`` as a CSV text (for small sets; ``write()`` streams)."""
    buffer = io.StringIO()
    write(docs, buffer, "csv")
    return buffer.getvalue()
