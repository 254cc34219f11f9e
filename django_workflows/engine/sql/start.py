"""A start on PostgreSQL in one statement: the instance, its first runs and its events.

Through the ORM a start is three compiled ``INSERT`` statements (the instance's
``save()``, the runs' and the events' ``bulk_create()``). When the start's plan holds
nothing else (no human task, no sub-workflow, no consumed signal) and nobody listens to
the instance's save signals, they are one data-modifying ``WITH`` statement, which
carries the transaction's ``COMMIT`` when it may (``fastpath.commits_in_statement``).
The runs' rows and the events' come from ``fastpath``'s SQL of a chained step.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

from typing import Any

from ...models import StepRun, WorkflowInstance
from . import fastpath


def applies(connection: Any, new_runs: list[StepRun], has_tasks: bool) -> bool:
    """Whether the start may be one statement: the instance written by hand-written SQL
    (``fastpath.writes_instance``) and nothing in the plan but runs and events."""
    return (
        fastpath.writes_instance(connection)
        and not has_tasks
        and not any(hasattr(run, "_subflow") or hasattr(run, "_signal") for run in new_runs)
    )


def insert(
    connection: Any,
    instance: WorkflowInstance,
    new_runs: list[StepRun],
    events: list[tuple[str, str, Any, Any]],
    *,
    commit: bool = False,
) -> list[int]:
    """Insert ``instance`` (new), ``new_runs`` and the ``events`` rows; returns the runs'
    ids in order."""
    t = fastpath.tables_for(connection)
    qn = connection.ops.quote_name
    fields = list(WorkflowInstance._meta.concrete_fields)
    rows = [fastpath.run_row(t, run, connection) for run in new_runs]
    shape = ("start", tuple(parts for parts, _ in rows), len(events), commit)
    sql = t.sql.get(shape)
    if sql is None:
        columns = ", ".join(qn(f.column) for f in fields)
        values = ", ".join(f"%s{fastpath.cast(f, connection)}" for f in fields)
        ctes = [f"inst AS (INSERT INTO {t.inst_table} ({columns}) VALUES ({values}))"]
        if rows:
            run_values = ", ".join("(" + ", ".join(parts) + ")" for parts, _ in rows)
            ctes.append(
                f"runs AS (INSERT INTO {t.run_table} ({t.run_columns}) VALUES {run_values} "
                f"RETURNING {t.run_pk})"
            )
        if events:
            event_values = ", ".join([t.event_row] * len(events))
            ctes.append(
                f"events AS (INSERT INTO {t.event_table} ({t.event_columns}) VALUES {event_values})"
            )
        ids = f"ARRAY(SELECT {t.run_pk} FROM runs ORDER BY {t.run_pk})" if rows else "NULL"
        sql = "WITH " + ", ".join(ctes) + f" SELECT {ids}"
        sql = t.sql[shape] = sql + "; COMMIT" if commit else sql
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    for _, row_params in rows:
        params.extend(row_params)
    params.extend(fastpath.event_params(t, connection, instance.pk, events))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (ids,) = cursor.fetchone()
    instance._state.adding = False
    instance._state.db = connection.alias
    return list(ids or [])
