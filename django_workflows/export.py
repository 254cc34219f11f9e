"""An instance's full history as one JSON-ready document: used by the admin's export
link, the API's ``GET instances/{id}/export/``, ``manage.py workflow_export`` and
``manage.py workflow_purge --export``.

``documents(queryset)`` streams many instances in chunks: one query for a chunk of
instances and one per kind of row under them (step runs, tasks, their candidate
groups, events, comments, signals, sub-workflow children), whatever the chunk holds,
so memory and statements grow with the chunk size, never with the number exported.
The rows under the instances are read as plain values (no model instance each).
Read-only: nothing here writes a row.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

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


def documents(
    queryset: QuerySet[WorkflowInstance] | None = None, chunk_size: int = CHUNK_SIZE
) -> Iterator[dict[str, Any]]:
    """The document of each instance of ``queryset`` (default: every instance, oldest
    first), streamed ``chunk_size`` at a time."""
    rows = WorkflowInstance.objects.all() if queryset is None else queryset
    if not rows.query.order_by:
        rows = rows.order_by("started_at", "id")
    rows = rows.select_related("definition", "started_by", "parent_step_run")
    chunk: list[WorkflowInstance] = []
    for instance in rows.iterator(chunk_size=chunk_size):
        chunk.append(instance)
        if len(chunk) == chunk_size:
            yield from _chunk(chunk)
            chunk = []
    if chunk:
        yield from _chunk(chunk)


def instance_document(instance_id: Any) -> dict[str, Any]:
    """One instance's document (``WorkflowInstance.DoesNotExist`` if there is none)."""
    for doc in documents(WorkflowInstance.objects.filter(pk=instance_id)):
        return doc
    raise WorkflowInstance.DoesNotExist(f"no workflow instance with id {instance_id!r}")


def _chunk(instances: list[WorkflowInstance]) -> Iterator[dict[str, Any]]:
    """The documents of ``instances``: one query per kind of row, for them all (rows as
    plain values: no model instance, no queryset per instance)."""
    ids = [instance.pk for instance in instances]
    name = get_user_model().USERNAME_FIELD
    under = {"instance_id__in": ids}
    runs = _by_instance(StepRun.objects.filter(**under).order_by("id").values(*RUN_FIELDS))
    groups: dict[int, list[str]] = defaultdict(list)
    for task_id, group in (
        HumanTaskGroup.objects.filter(task__instance_id__in=ids)
        .order_by("task_id", "name")
        .values_list("task_id", "name")
    ):
        groups[task_id].append(group)
    tasks = _by_instance(
        HumanTask.objects.filter(**under)
        .order_by("created_at", "id")
        .values(*TASK_FIELDS, *(f"{user}__{name}" for user in TASK_USERS))
    )
    events = _by_instance(
        WorkflowEvent.objects.filter(**under)
        .order_by("id")
        .values("id", "instance_id", "type", "step_name", "payload", "created_at")
    )
    comments = _by_instance(
        Comment.objects.filter(**under)
        .order_by("created_at", "id")
        .values(
            "id",
            "instance_id",
            "task_id",
            "author_id",
            f"author__{name}",
            "text",
            "attachment",
            "created_at",
        )
    )
    signals = _by_instance(
        WorkflowSignal.objects.filter(**under)
        .order_by("id")
        .values(*SIGNAL_FIELDS, f"sent_by__{name}")
    )
    children: dict[Any, list[str]] = defaultdict(list)
    for parent_id, child_id in (
        WorkflowInstance.objects.filter(parent_id__in=ids)
        .order_by("started_at", "id")
        .values_list("parent_id", "id")
    ):
        children[parent_id].append(str(child_id))
    for instance in instances:
        pk = instance.pk
        yield _document(
            instance,
            runs=[_run(row) for row in runs.get(pk, ())],
            tasks=[_task(row, groups, name) for row in tasks.get(pk, ())],
            events=[_event(row) for row in events.get(pk, ())],
            comments=[_comment(row, name) for row in comments.get(pk, ())],
            signals=[_signal(row, name) for row in signals.get(pk, ())],
            children=children.get(pk, []),
        )


def _by_instance(rows: Iterable[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["instance_id"]].append(row)
    return grouped


RUN_FIELDS = (
    "id", "instance_id", "step_name", "step_type", "status", "attempt", "max_attempts",
    "crashes", "worker", "input", "changes", "error", "traceback", "created_at", "queued_at",
    "due_at", "started_at", "finished_at",
)  # fmt: skip
TASK_USERS = ("assignee", "claimed_by", "completed_by", "completed_on_behalf_of")
TASK_FIELDS = (
    "id", "instance_id", "step_run_id", "step_name", "title", "summary", "status",
    "assignee_id", "claimed_by_id", "completed_by_id", "completed_on_behalf_of_id", "result",
    "close_reason", "slot", "reminders_sent", "created_at", "due_at", "escalated_at",
    "completed_at",
)  # fmt: skip
SIGNAL_FIELDS = (
    "id", "instance_id", "name", "data", "idempotency_key", "sent_by_id",
    "consumed_by_step_run_id", "created_at", "consumed_at", "discarded_at",
)  # fmt: skip


def _document(instance: WorkflowInstance, **rows: list[Any]) -> dict[str, Any]:
    parent_run = instance.parent_step_run
    return {
        "format": FORMAT,
        "id": str(instance.pk),
        "workflow": instance.definition.name,
        "version": instance.definition.version,
        "status": instance.status,
        "business_key": instance.business_key,
        "started_by": _user(
            instance.started_by_id,
            instance.started_by.get_username() if instance.started_by else None,
        ),
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
        "children": rows["children"],
        "step_runs": rows["runs"],
        "tasks": rows["tasks"],
        "events": rows["events"],
        "comments": rows["comments"],
        "signals": rows["signals"],
    }


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "step": row["step_name"],
        "type": row["step_type"],
        "status": row["status"],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "crashes": row["crashes"],
        "worker": row["worker"],
        "input": row["input"],
        "changes": row["changes"],
        "error": row["error"],
        "traceback": row["traceback"],
        **_times(row, "created_at", "queued_at", "due_at", "started_at", "finished_at"),
    }


def _task(row: dict[str, Any], groups: dict[int, list[str]], name: str) -> dict[str, Any]:
    users = {user: _user(row[f"{user}_id"], row[f"{user}__{name}"]) for user in TASK_USERS}
    return {
        "id": row["id"],
        "step_run": row["step_run_id"],
        "step": row["step_name"],
        "title": row["title"],
        "summary": row["summary"],
        "status": row["status"],
        "assignee": users["assignee"],
        "candidate_groups": groups.get(row["id"], []),
        "claimed_by": users["claimed_by"],
        "completed_by": users["completed_by"],
        "completed_on_behalf_of": users["completed_on_behalf_of"],
        "result": row["result"],
        "close_reason": row["close_reason"],
        "slot": row["slot"],
        "reminders_sent": row["reminders_sent"],
        **_times(row, "created_at", "due_at", "escalated_at", "completed_at"),
    }


def _event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "step": row["step_name"],
        "payload": row["payload"],
        "created_at": _time(row["created_at"]),
    }


def _comment(row: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task": row["task_id"],
        "author": _user(row["author_id"], row[f"author__{name}"]),
        "text": row["text"],
        "attachment": row["attachment"] or None,
        "created_at": _time(row["created_at"]),
    }


def _signal(row: dict[str, Any], name: str) -> dict[str, Any]:
    if row["consumed_at"] is not None:
        state = "consumed"
    else:
        state = "discarded" if row["discarded_at"] is not None else "pending"
    return {
        "id": row["id"],
        "name": row["name"],
        "data": row["data"],
        "state": state,
        "idempotency_key": row["idempotency_key"],
        "sent_by": _user(row["sent_by_id"], row[f"sent_by__{name}"]),
        "consumed_by_step_run": row["consumed_by_step_run_id"],
        **_times(row, "created_at", "consumed_at", "discarded_at"),
    }


def _user(pk: Any, username: Any) -> dict[str, Any] | None:
    """A user as ``{"id", "username"}``: the name stays readable if the user goes."""
    return None if pk is None else {"id": pk, "username": username}


def _times(row: dict[str, Any], *names: str) -> dict[str, str | None]:
    return {name: _time(row[name]) for name in names}


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _id(value: Any) -> str | None:
    return str(value) if value is not None else None


# -- formats -------------------------------------------------------------------------


def dumps(doc: dict[str, Any]) -> str:
    """A document as one line of JSON (JSON lines)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


#: What a spreadsheet reads as the start of a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with a single
    quote (shown as text); other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(doc: dict[str, Any]) -> list[Any]:
    """A document as one CSV row of ``CSV_COLUMNS``: the instance and its row counts;
    text cells starting like a formula are neutralised (``csv_cell``)."""
    user = doc["started_by"]
    return [csv_cell(value) for value in _csv_values(doc, user)]


def _csv_values(doc: dict[str, Any], user: dict[str, Any] | None) -> list[Any]:
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
