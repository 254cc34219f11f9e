"""The rows of the list endpoints, read as tuples and written straight as the JSON of
their serializers.

``GET /api/workflows/tasks/`` and ``GET /api/workflows/instances/`` answer a page of
``TaskSerializer`` and ``InstanceSerializer`` objects. Reading model instances (and
their related rows) and running a ``ModelSerializer`` field by field costs more than
the page's SQL, and leaves thousands of objects per request to the cyclic collector
(DRF's request, view and response refer to each other, so the page lives until a
collection). Here a page is one ``values_list`` query of the serialized columns (plus
one query of the page's candidate group names, the prefetch's), each row becomes its
dict directly: the same keys in the same order, with the values the serializers give
(UUIDs as strings, DRF's datetime format, null for null). The serializers stay the
API's documentation (the OpenAPI schema) and serve the details; the tests compare the
two on varied rows (``tests/api/test_lists.py``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

from ..paging import candidate_group_names

#: TaskSerializer.Meta.fields, as columns (``candidate_groups`` comes from its own query).
TASK_COLUMNS = (
    "id",
    "instance_id",
    "instance__definition__name",
    "instance__definition__version",
    "step_name",
    "title",
    "summary",
    "description",
    "status",
    "assignee_id",
    "claimed_by_id",
    "due_at",
    "completed_by_id",
    "completed_on_behalf_of_id",
    "completed_at",
    "result",
    "slot",
    "close_reason",
    "created_at",
)

#: InstanceSerializer.Meta.fields, as columns.
INSTANCE_COLUMNS = (
    "id",
    "definition__name",
    "definition__version",
    "status",
    "business_key",
    "started_by_id",
    "current_steps",
    "failed_step",
    "error",
    "started_at",
    "updated_at",
    "finished_at",
)


def _datetime() -> Callable[[Any], Any]:
    """DRF's rendering of a datetime (its format, the current time zone; None for null).

    Its usual case (ISO 8601, aware values, ``USE_TZ``) without its per-value look-ups
    of the setting and the time zone; the field itself for the others.
    """
    field = serializers.DateTimeField()
    output_format = getattr(field, "format", api_settings.DATETIME_FORMAT)
    zone = field.default_timezone()
    if zone is None or not isinstance(output_format, str) or output_format.lower() != ISO_8601:
        return field.to_representation

    def render(value: Any) -> Any:
        if not value:
            return None
        if not isinstance(value, datetime.datetime) or value.tzinfo is None:
            return field.to_representation(value)
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return render


def _dict(value: Any) -> Any:
    """A ``DictField``'s rendering (keys as strings)."""
    return None if value is None else {str(key): item for key, item in value.items()}


def _strings(value: Any) -> Any:
    """A ``ListField(child=CharField())``'s rendering."""
    if value is None:
        return None
    return [None if item is None else str(item) for item in value]


def tasks(rows: Sequence[tuple]) -> list[dict[str, Any]]:
    """The ``TaskSerializer`` data of ``rows`` (tuples of ``TASK_COLUMNS``)."""
    when = _datetime()
    groups = candidate_group_names([row[0] for row in rows])
    return [
        {
            "id": pk,
            "instance": str(instance),
            "workflow": workflow,
            "version": version,
            "step_name": step_name,
            "title": title,
            "summary": summary,
            "description": description,
            "status": status,
            "assignee": assignee,
            "candidate_groups": groups[pk],
            "claimed_by": claimed_by,
            "due_at": when(due_at),
            "completed_by": completed_by,
            "completed_on_behalf_of": on_behalf_of,
            "completed_at": when(completed_at),
            "result": _dict(result),
            "slot": slot,
            "close_reason": close_reason,
            "created_at": when(created_at),
        }
        for (
            pk,
            instance,
            workflow,
            version,
            step_name,
            title,
            summary,
            description,
            status,
            assignee,
            claimed_by,
            due_at,
            completed_by,
            on_behalf_of,
            completed_at,
            result,
            slot,
            close_reason,
            created_at,
        ) in rows
    ]


def instances(rows: Sequence[tuple]) -> list[dict[str, Any]]:
    """The ``InstanceSerializer`` data of ``rows`` (tuples of ``INSTANCE_COLUMNS``)."""
    when = _datetime()
    return [
        {
            "id": str(pk),
            "workflow": workflow,
            "version": version,
            "status": status,
            "business_key": business_key,
            "started_by": started_by,
            "current_steps": _strings(current_steps),
            "failed_step": failed_step,
            "error": error,
            "started_at": when(started_at),
            "updated_at": when(updated_at),
            "finished_at": when(finished_at),
        }
        for (
            pk,
            workflow,
            version,
            status,
            business_key,
            started_by,
            current_steps,
            failed_step,
            error,
            started_at,
            updated_at,
            finished_at,
        ) in rows
    ]
