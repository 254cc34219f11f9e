"""PostgreSQL: the writes of a chained machine step's transition in one statement.

A step that finished and routes on to machine steps (or ends its workflow) writes,
after the instance's row lock: the fenced UPDATE of its run, an INSERT of the next
runs (the first one already claimed), an INSERT of the events and the UPDATE of the
instance. ``FastFinish`` sends the four as one data-modifying ``WITH`` statement::

    WITH done AS (UPDATE <run> SET ... WHERE id = %s AND status = 'running'
                  AND lease_token = %s RETURNING 1),
         runs AS (INSERT INTO <run> (...) SELECT * FROM (VALUES ...) AS v
                  WHERE EXISTS (SELECT 1 FROM done) RETURNING id),
         events AS (INSERT INTO <event> (...) SELECT ... WHERE EXISTS (SELECT 1 FROM done)),
         inst AS (UPDATE <instance> SET ... WHERE id = %s AND EXISTS (SELECT 1 FROM done))
    SELECT (SELECT count(*) FROM done), ARRAY(SELECT id FROM runs ORDER BY id)

so the lease fence stays exact: if the run's UPDATE matches no row, nothing else is
written. Table and column names come from the models' ``_meta``; the SQL text is built
once per shape (the rows' kinds and the number of events) and cached. Values go through
each field's ``pre_save`` and ``get_db_prep_save``, as the ORM would send them (JSON with
the field's encoder, aware datetimes); ``Now()`` is the ORM's ``STATEMENT_TIMESTAMP()``.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from django.db.models import Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now

from ..models import StepRun, WorkflowEvent, WorkflowInstance

NOW = "STATEMENT_TIMESTAMP()"

#: The instance's columns a transition writes (``_Transition.close``'s update_fields).
INSTANCE_FIELDS = (
    "status",
    "context",
    "current_steps",
    "tokens",
    "failed_step",
    "error",
    "error_traceback",
    "updated_at",
    "finished_at",
)


class Unsupported(Exception):
    """A value the fast path does not write (an unexpected expression): use the ORM."""


def _cast(field: Any, connection: Any) -> str:
    if field.get_internal_type() in ("CharField", "TextField"):
        return "text"  # an assignment to varchar(n) still refuses a longer value
    return field.db_type(connection)


class _Tables:
    """Quoted names, columns and placeholders of the three tables, from ``_meta``."""

    def __init__(self, connection: Any) -> None:
        qn = connection.ops.quote_name
        run_meta, event_meta, inst_meta = StepRun._meta, WorkflowEvent._meta, WorkflowInstance._meta
        self.run_table = qn(run_meta.db_table)
        self.run_pk = qn(run_meta.pk.column)
        self.run_fields = [f for f in run_meta.concrete_fields if not f.primary_key]
        self.run_columns = ", ".join(qn(f.column) for f in self.run_fields)
        self.run_placeholders = [f"%s::{_cast(f, connection)}" for f in self.run_fields]
        self.run_field = {f.attname: f for f in run_meta.concrete_fields}
        self.run_col = {f.attname: qn(f.column) for f in run_meta.concrete_fields}

        self.event_table = qn(event_meta.db_table)
        names = ("instance", "type", "step_name", "payload", "created_at")
        self.event_fields = [event_meta.get_field(name) for name in names]
        self.event_columns = ", ".join(qn(f.column) for f in self.event_fields)
        self.event_row = "(" + ", ".join(f"%s::{_cast(f, connection)}" for f in self.event_fields)
        self.event_row += ")"

        self.inst_table = qn(inst_meta.db_table)
        self.inst_pk = qn(inst_meta.pk.column)
        self.inst_pk_cast = _cast(inst_meta.pk, connection)
        self.inst_fields = [inst_meta.get_field(name) for name in INSTANCE_FIELDS]
        self.inst_set = ", ".join(
            f"{qn(f.column)} = %s::{_cast(f, connection)}" for f in self.inst_fields
        )
        self.sql: dict[tuple[Any, ...], str] = {}


_tables: dict[str, _Tables] = {}
_tables_lock = threading.Lock()


def _tables_for(connection: Any) -> _Tables:
    tables = _tables.get(connection.alias)
    if tables is None:
        with _tables_lock:
            tables = _tables.setdefault(connection.alias, _Tables(connection))
    return tables


def _run_row(t: _Tables, run: StepRun, connection: Any) -> tuple[tuple[str, ...], list[Any]]:
    """One VALUES row of a new run: its SQL parts (the shape) and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for field, placeholder in zip(t.run_fields, t.run_placeholders, strict=True):
        value = field.pre_save(run, True)  # auto_now_add: created_at, as bulk_create sets it
        if isinstance(value, Now):
            parts.append(NOW)
        elif (
            isinstance(value, CombinedExpression)
            and value.connector == "+"
            and isinstance(value.lhs, Now)
            and isinstance(value.rhs, Value)
            and isinstance(value.rhs.value, timedelta)
        ):
            parts.append(f"({NOW} + %s::interval)")
            params.append(value.rhs.value)
        elif hasattr(value, "resolve_expression"):
            raise Unsupported(f"{field.name}: {value!r}")
        else:
            parts.append(placeholder)
            params.append(field.get_db_prep_save(value, connection))
    return tuple(parts), params


def finish(
    connection: Any,
    *,
    run_pk: int,
    token: Any,
    changes: dict[str, Any],
    new_runs: list[StepRun],
    events: list[tuple[str, str, Any, Any]],
    instance: WorkflowInstance,
) -> tuple[bool, list[int]]:
    """Write a finished run, its successors, the events and the instance in one statement.

    ``events`` are (type, step_name, payload, created_at). Returns (whether the lease
    still held, the new runs' ids in order); nothing is written when it did not hold.
    Raises ``Unsupported`` (before any SQL is sent) for a value it cannot write.
    """
    t = _tables_for(connection)
    rows = [_run_row(t, run, connection) for run in new_runs]
    shape = (tuple(parts for parts, _ in rows), len(events))
    sql = t.sql.get(shape)
    if sql is None:
        sql = _build(t, shape)
        t.sql[shape] = sql

    rf = t.run_field
    params: list[Any] = [
        "completed",
        rf["changes"].get_db_prep_save(changes, connection),
        run_pk,
        "running",
        rf["lease_token"].get_db_prep_save(token, connection),
    ]
    for _, row_params in rows:
        params.extend(row_params)
    inst_pk = instance.pk
    ef = t.event_fields
    for type_, step_name, payload, created_at in events:
        params.extend(
            (
                ef[0].get_db_prep_save(inst_pk, connection),
                type_,
                step_name,
                ef[3].get_db_prep_save(payload, connection),
                ef[4].get_db_prep_save(created_at, connection),
            )
        )
    for field in t.inst_fields:
        params.append(field.get_db_prep_save(field.pre_save(instance, False), connection))
    params.append(WorkflowInstance._meta.pk.get_db_prep_save(inst_pk, connection))

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        done, ids = cursor.fetchone()
    return bool(done), list(ids or [])


def _build(t: _Tables, shape: tuple[Any, ...]) -> str:
    row_parts, n_events = shape
    c = t.run_col
    ctes = [
        f"done AS (UPDATE {t.run_table} SET {c['status']} = %s, {c['changes']} = %s::jsonb, "
        f"{c['finished_at']} = {NOW}, {c['lease_token']} = NULL, {c['error']} = '', "
        f"{c['traceback']} = '' WHERE {t.run_pk} = %s AND {c['status']} = %s "
        f"AND {c['lease_token']} = %s::uuid RETURNING 1)"
    ]
    if row_parts:
        values = ", ".join("(" + ", ".join(parts) + ")" for parts in row_parts)
        ctes.append(
            f"runs AS (INSERT INTO {t.run_table} ({t.run_columns}) SELECT * FROM "
            f"(VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM done) RETURNING {t.run_pk})"
        )
    if n_events:
        values = ", ".join([t.event_row] * n_events)
        ctes.append(
            f"events AS (INSERT INTO {t.event_table} ({t.event_columns}) SELECT * FROM "
            f"(VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM done))"
        )
    ctes.append(
        f"inst AS (UPDATE {t.inst_table} SET {t.inst_set} WHERE {t.inst_pk} = "
        f"%s::{t.inst_pk_cast} AND EXISTS (SELECT 1 FROM done))"
    )
    ids = (
        f"ARRAY(SELECT {t.run_pk} FROM runs ORDER BY {t.run_pk})"
        if row_parts
        else "ARRAY[]::bigint[]"
    )
    return "WITH " + ", ".join(ctes) + f" SELECT (SELECT count(*) FROM done), {ids}"
