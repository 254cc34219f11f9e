"""The writes of a chained machine step's transition, in SQL built once.

A step that finished and routes on to machine steps (or ends its workflow) writes,
after the instance's row lock: the fenced UPDATE of its run, an INSERT of the next
runs (the first one already claimed), an INSERT of the events and the UPDATE of the
instance. Through the ORM each costs a compiled statement. Here the SQL comes from the
models' ``_meta``, built once per shape (the rows' kinds and the number of events) and
cached per connection.

On PostgreSQL the four writes are one data-modifying ``WITH`` statement::

    WITH done AS (UPDATE <run> SET ... WHERE id = %s AND status = 'running'
                  AND lease_token = %s RETURNING 1),
         runs AS (INSERT INTO <run> (...) SELECT * FROM (VALUES ...) AS v
                  WHERE EXISTS (SELECT 1 FROM done) RETURNING id),
         events AS (INSERT INTO <event> (...) SELECT ... WHERE EXISTS (SELECT 1 FROM done)),
         inst AS (UPDATE <instance> SET ... WHERE id = %s AND EXISTS (SELECT 1 FROM done))
    SELECT (SELECT count(*) FROM done), ARRAY(SELECT id FROM runs ORDER BY id)

A worker that goes on with the next step of its own chain does not lock the instance
first: it plans from the instance as it last wrote it (or as its claim read it), and
the statement starts with ``locked AS (SELECT 1 FROM <instance> WHERE id = %s AND
<every value the plan was made from> = %s ... FOR UPDATE)``, which the run's UPDATE
requires. If the instance changed meanwhile, nothing is written and the engine locks
and plans again; if it did not, the result is the one the locked path would write.
With the transaction's ``COMMIT`` in the same query (``commits_in_statement``), such a
step is one round trip.

SQLite has no data-modifying ``WITH``: there they are four statements after the lock,
the run's fenced UPDATE first. Either way the lease fence stays exact: if the run's
UPDATE matches no row, nothing else is written.

Values go through each field's ``pre_save`` and ``get_db_prep_save``, as the ORM sends
them (JSON with the field's encoder, datetimes as the backend stores them); an
expression such as ``Now()`` is compiled by Django's own insert compiler.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db.models import JSONField, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.db.models.sql import InsertQuery

from ...models import StepRun, WorkflowEvent, WorkflowInstance
from . import concrete_field, saves_unobserved

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

VENDORS = ("postgresql", "sqlite")

#: What planning a chained step reads of the instance (besides its id): the unlocked
#: path (``expectation``) writes only if the row still holds these values.
EXPECT_FIELDS = (
    "definition",
    "status",
    "context",
    "current_steps",
    "tokens",
    "failed_step",
    "error",
    "error_traceback",
)


def cast(field: Any, connection: Any) -> str:
    """``::type`` for PostgreSQL, where a VALUES list does not take its columns' types."""
    if connection.vendor != "postgresql":
        return ""
    if field.get_internal_type() in ("CharField", "TextField"):
        return "::text"  # an assignment to varchar(n) still refuses a longer value
    return f"::{field.db_type(connection)}"


class Tables:
    """Quoted names, columns and placeholders of the three tables, from ``_meta``; the
    SQL of each shape seen; a compiler for expressions (``Now()``)."""

    def __init__(self, connection: Any) -> None:
        qn = connection.ops.quote_name
        self.postgres = connection.vendor == "postgresql"
        run_meta, event_meta, inst_meta = StepRun._meta, WorkflowEvent._meta, WorkflowInstance._meta
        self.run_table = qn(run_meta.db_table)
        self.run_pk = qn(run_meta.pk.column)
        self.run_fields = [f for f in run_meta.concrete_fields if not f.primary_key]
        self.run_columns = ", ".join(qn(f.column) for f in self.run_fields)
        self.run_placeholders = [f"%s{cast(f, connection)}" for f in self.run_fields]
        self.run_field = {f.attname: f for f in run_meta.concrete_fields}
        self.run_col = {f.attname: qn(f.column) for f in run_meta.concrete_fields}
        self.token_cast = cast(self.run_field["lease_token"], connection)
        self.changes_cast = cast(self.run_field["changes"], connection)

        self.event_table = qn(event_meta.db_table)
        names = ("instance", "type", "step_name", "payload", "created_at")
        self.event_fields = [concrete_field(event_meta, name) for name in names]
        self.event_columns = ", ".join(qn(f.column) for f in self.event_fields)
        self.event_row = "(" + ", ".join(f"%s{cast(f, connection)}" for f in self.event_fields)
        self.event_row += ")"

        self.inst_table = qn(inst_meta.db_table)
        self.inst_pk = qn(inst_meta.pk.column)
        self.inst_pk_cast = cast(inst_meta.pk, connection)
        self.inst_fields = [concrete_field(inst_meta, name) for name in INSTANCE_FIELDS]
        self.inst_set = ", ".join(
            f"{qn(f.column)} = %s{cast(f, connection)}" for f in self.inst_fields
        )
        self.expect_fields = [concrete_field(inst_meta, name) for name in EXPECT_FIELDS]
        self.inst_where = " AND ".join(
            [f"{self.inst_pk} = %s{self.inst_pk_cast}"]
            + [f"{qn(f.column)} = %s{cast(f, connection)}" for f in self.expect_fields]
            + [f"{qn(concrete_field(inst_meta, 'finished_at').column)} IS NULL"]
        )
        self.compiler = InsertQuery(StepRun).get_compiler(connection=connection)
        self.now, _ = self.expression(self.run_field["finished_at"], _now())
        self.sql: dict[tuple[Any, ...], Any] = {}
        self.compiled: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}

    def expression(self, field: Any, value: Any) -> tuple[str, list[Any]]:
        """An expression's SQL and parameters, as an INSERT compiles it."""
        compiler = self.compiler
        return compiler.compile(compiler.prepare_value(field, value))


def _now() -> Any:
    return Now()


def _expression_key(field: Any, value: Any) -> tuple[Any, ...] | None:
    """A cache key for the expressions the engine writes, ``Now()`` and ``Now() +
    timedelta``; None for any other (compiled each time)."""
    if type(value) is Now:
        return (field.attname, "now")
    if (
        type(value) is CombinedExpression
        and value.connector == "+"
        and type(value.lhs) is Now
        and type(value.rhs) is Value
        and type(value.rhs.value) is timedelta
    ):
        return (field.attname, "now+", value.rhs.value)
    return None


def supports(connection: Any) -> bool:
    """PostgreSQL, and SQLite from 3.35 (``INSERT ... RETURNING``)."""
    return connection.vendor in VENDORS and connection.features.can_return_rows_from_bulk_insert


def writes_instance(connection: Any) -> bool:
    """Whether a locked transition may write the instance and its events in one statement
    (``write_instance``): on PostgreSQL, while nobody listens to the instance's
    ``pre_save`` or ``post_save`` (which only ``save()`` sends)."""
    return connection.vendor == "postgresql" and saves_unobserved(WorkflowInstance)


def commits_in_statement(connection: Any) -> bool:
    """Whether the transition's last statement may carry its ``COMMIT`` (one round trip
    less): PostgreSQL through psycopg 3's client-side binding cursor (Django's default;
    it sends several statements in one query), in an outermost ``atomic()`` block that
    commits on exit, with no savepoint and nothing marked for rollback. The server then
    commits with the writes, psycopg sees the connection idle, and Django's own commit
    at the end of the block sends nothing (its ``on_commit`` callbacks run as always).
    Inside a caller's transaction (a savepoint) it never commits."""
    if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg":
        return False
    if not (
        connection.in_atomic_block
        and connection.commit_on_exit
        and len(connection.atomic_blocks) == 1
        and not connection.savepoint_ids
        and not connection.needs_rollback
    ):
        return False
    from psycopg import ClientCursor

    raw = connection.connection
    return raw is not None and issubclass(raw.cursor_factory, ClientCursor)


def expectation(connection: Any, instance: WorkflowInstance) -> list[Any]:
    """The instance's values that a plan is made from, as parameters, taken now (JSON
    encoded at once: planning changes the dicts in place)."""
    t = tables_for(connection)
    values = [WorkflowInstance._meta.pk.get_db_prep_save(instance.pk, connection)]
    for field in t.expect_fields:
        value = getattr(instance, field.attname)
        if isinstance(field, JSONField):
            values.append(json.dumps(value, cls=field.encoder))
        else:
            values.append(field.get_db_prep_save(value, connection))
    return values


def tables_for(connection: Any) -> Tables:
    """The tables' SQL parts for ``connection``, built once (``start.py`` shares them)."""
    # Kept on the connection object (one per thread and alias), not in a global map:
    # the cache refers to the connection, so a map would keep every thread's alive.
    tables = getattr(connection, "_workflows_fastpath", None)
    if tables is None:
        tables = connection._workflows_fastpath = Tables(connection)
    return tables


def run_row(t: Tables, run: StepRun, connection: Any) -> tuple[tuple[str, ...], list[Any]]:
    """One VALUES row of a new run: its SQL parts (the shape) and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for field, placeholder in zip(t.run_fields, t.run_placeholders, strict=True):
        value = field.pre_save(run, True)  # auto_now_add: created_at, as bulk_create sets it
        if hasattr(value, "resolve_expression"):
            key = _expression_key(field, value)
            compiled = t.compiled.get(key) if key is not None else None
            if compiled is None:
                compiled = t.expression(field, value)
                if key is not None:
                    t.compiled[key] = compiled
            parts.append(compiled[0])
            params.extend(compiled[1])
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
    commit: bool = False,
    expect: list[Any] | None = None,
) -> tuple[bool, bool, list[int]]:
    """Write a finished run, its successors, the events and the instance.

    ``events`` are (type, step_name, payload, created_at). Returns (whether the
    instance was as expected, whether the lease still held, the new runs' ids in
    order); nothing is written unless both held.

    With ``commit`` (PostgreSQL, see ``commits_in_statement``) the statement ends the
    transaction too: ``COMMIT`` goes in the same round trip. With ``expect``
    (PostgreSQL, from ``expectation``) the instance is not locked yet: the statement
    locks it (``FOR UPDATE``) and writes only if it still holds those values.
    """
    t = tables_for(connection)
    rows = [run_row(t, run, connection) for run in new_runs]
    commit = commit and t.postgres
    if expect is not None and not t.postgres:
        raise ValueError("the unlocked path needs PostgreSQL")
    shape = (tuple(parts for parts, _ in rows), len(events), commit, expect is not None)
    sql: Any = t.sql.get(shape)
    if sql is None:
        sql = _build_postgres(t, shape) if t.postgres else _build_sqlite(t, shape)
        t.sql[shape] = sql

    rf = t.run_field
    done = [
        "completed",
        rf["changes"].get_db_prep_save(changes, connection),
        run_pk,
        "running",
        rf["lease_token"].get_db_prep_save(token, connection),
    ]
    runs: list[Any] = []
    for _, row_params in rows:
        runs.extend(row_params)
    evs = event_params(t, connection, instance.pk, events)
    inst = _instance_params(t, connection, instance)

    with connection.cursor() as cursor:
        if t.postgres:
            cursor.execute(sql, (expect or []) + done + runs + evs + inst)
            locked, held, ids = cursor.fetchone()
            return bool(locked), bool(held), list(ids or [])
        done_sql, runs_sql, events_sql, inst_sql = sql
        cursor.execute(done_sql, done)
        if cursor.rowcount != 1:
            return True, False, []
        ids = []
        if runs_sql:
            cursor.execute(runs_sql, runs)
            ids = [row[0] for row in cursor.fetchall()]
        if events_sql:
            cursor.execute(events_sql, evs)
        cursor.execute(inst_sql, inst)
        return True, True, ids


def event_params(
    t: Tables, connection: Any, instance_pk: Any, events: list[tuple[str, str, Any, Any]]
) -> list[Any]:
    """The parameters of ``events``' VALUES rows (``t.event_row`` each) of one instance."""
    ef = t.event_fields
    event_pk = ef[0].get_db_prep_save(instance_pk, connection)
    params: list[Any] = []
    for type_, step_name, payload, created_at in events:
        params.extend(
            (
                event_pk,
                type_,
                step_name,
                ef[3].get_db_prep_save(payload, connection),
                ef[4].get_db_prep_save(created_at, connection),
            )
        )
    return params


def _instance_params(t: Tables, connection: Any, instance: WorkflowInstance) -> list[Any]:
    """The instance's written columns (``updated_at`` set now, as ``save()`` does), then
    its pk."""
    params = [
        field.get_db_prep_save(field.pre_save(instance, False), connection)
        for field in t.inst_fields
    ]
    params.append(WorkflowInstance._meta.pk.get_db_prep_save(instance.pk, connection))
    return params


def write_instance(
    connection: Any,
    instance: WorkflowInstance,
    events: list[tuple[str, str, Any, Any]],
    *,
    commit: bool = False,
    discard_at: Any = None,
) -> list[tuple[int, str]]:
    """PostgreSQL: the end of a locked transition's ORM path, the instance's ``UPDATE``
    and the ``INSERT`` of its events, in one statement (with ``commit``, the
    transaction's ``COMMIT`` too: see ``commits_in_statement``).

    With ``discard_at`` (the instance finished), its pending signals are marked
    discarded at that time in the same statement, each with a ``SignalDiscarded`` row
    after the events; returns their (id, name), oldest first. The caller holds the
    instance's lock, which every sender of a signal takes first: none comes meanwhile."""
    t = tables_for(connection)
    discard = discard_at is not None
    shape = ("instance", len(events), commit, discard)
    sql = t.sql.get(shape)
    if sql is None:
        sql = t.sql[shape] = _instance_sql(t, connection, len(events), commit, discard)
    params = _instance_params(t, connection, instance)
    ef = t.event_fields
    if discard:
        at = ef[4].get_db_prep_save(discard_at, connection)
        params += [at, ef[0].get_db_prep_save(instance.pk, connection)]
    params += event_params(t, connection, instance.pk, events)
    if discard:
        params += [ef[0].get_db_prep_save(instance.pk, connection), at]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if not discard:
            return []
        ids, names = cursor.fetchone()
    return list(zip(ids or [], names or [], strict=True))


def _instance_sql(t: Tables, connection: Any, n_events: int, commit: bool, discard: bool) -> str:
    from ...signal_models import WorkflowSignal

    qn = connection.ops.quote_name
    ctes = [f"inst AS (UPDATE {t.inst_table} SET {t.inst_set} WHERE {t.inst_pk} = %s)"]
    rows = []
    if n_events:
        rows.append(f"SELECT * FROM (VALUES {', '.join([t.event_row] * n_events)}) AS v")
    if discard:
        meta = WorkflowSignal._meta
        c = {name: qn(concrete_field(meta, name).column) for name in ("instance", "name")}
        c.update({name: qn(name) for name in ("consumed_at", "discarded_at")})
        pk = qn(meta.pk.column)
        ctes.append(
            f"sig AS (UPDATE {qn(meta.db_table)} SET {c['discarded_at']} = %s "
            f"WHERE {c['instance']} = %s AND {c['consumed_at']} IS NULL "
            f"AND {c['discarded_at']} IS NULL RETURNING {pk}, {c['name']})"
        )
        # SignalDiscarded's payload, as the ORM path writes it (engine.signalwait).
        rows.append(
            f"SELECT %s{cast(t.event_fields[0], connection)}, 'SignalDiscarded', '', "
            f"jsonb_build_object('signal', s.{c['name']}, 'signal_id', s.{pk}, "
            f"'user_id', NULL, 'reason', ''), %s{cast(t.event_fields[4], connection)} "
            f"FROM (SELECT * FROM sig ORDER BY {pk}) AS s"
        )
    if rows:  # one INSERT: the rows' ids in this order
        rows_sql = " UNION ALL ".join(rows)
        ctes.append(f"events AS (INSERT INTO {t.event_table} ({t.event_columns}) {rows_sql})")
    end = (
        f"SELECT ARRAY(SELECT {pk} FROM sig ORDER BY {pk}), "
        f"ARRAY(SELECT {c['name']} FROM sig ORDER BY {pk})"
        if discard
        else "SELECT 1"
    )
    sql = "WITH " + ", ".join(ctes) + " " + end
    return sql + "; COMMIT" if commit else sql


def _done_sql(t: Tables) -> str:
    c = t.run_col
    return (
        f"UPDATE {t.run_table} SET {c['status']} = %s, {c['changes']} = %s{t.changes_cast}, "
        f"{c['finished_at']} = {t.now}, {c['lease_token']} = NULL, {c['error']} = '', "
        f"{c['traceback']} = '' WHERE {t.run_pk} = %s AND {c['status']} = %s "
        f"AND {c['lease_token']} = %s{t.token_cast}"
    )


def _build_postgres(t: Tables, shape: tuple[Any, ...]) -> str:
    row_parts, n_events, commit, unlocked = shape
    ctes = []
    locked = "1"
    if unlocked:
        # Evaluated first (an InitPlan of the run's UPDATE): the instance's row lock
        # comes before the run's, as on the locked path.
        ctes.append(f"locked AS (SELECT 1 FROM {t.inst_table} WHERE {t.inst_where} FOR UPDATE)")
        ctes.append(f"done AS ({_done_sql(t)} AND EXISTS (SELECT 1 FROM locked) RETURNING 1)")
        locked = "(SELECT count(*) FROM locked)"
    else:
        ctes.append(f"done AS ({_done_sql(t)} RETURNING 1)")
    exists = "WHERE EXISTS (SELECT 1 FROM done)"
    if row_parts:
        values = ", ".join("(" + ", ".join(parts) + ")" for parts in row_parts)
        ctes.append(
            f"runs AS (INSERT INTO {t.run_table} ({t.run_columns}) SELECT * FROM "
            f"(VALUES {values}) AS v {exists} RETURNING {t.run_pk})"
        )
    if n_events:
        values = ", ".join([t.event_row] * n_events)
        ctes.append(
            f"events AS (INSERT INTO {t.event_table} ({t.event_columns}) SELECT * FROM "
            f"(VALUES {values}) AS v {exists})"
        )
    ctes.append(
        f"inst AS (UPDATE {t.inst_table} SET {t.inst_set} WHERE {t.inst_pk} = "
        f"%s{t.inst_pk_cast} AND EXISTS (SELECT 1 FROM done))"
    )
    ids = (
        f"ARRAY(SELECT {t.run_pk} FROM runs ORDER BY {t.run_pk})"
        if row_parts
        else "ARRAY[]::bigint[]"
    )
    sql = "WITH " + ", ".join(ctes) + f" SELECT {locked}, (SELECT count(*) FROM done), {ids}"
    return sql + "; COMMIT" if commit else sql


def _build_sqlite(t: Tables, shape: tuple[Any, ...]) -> tuple[str, str, str, str]:
    row_parts, n_events, _, _ = shape
    runs = events = ""
    if row_parts:
        values = ", ".join("(" + ", ".join(parts) + ")" for parts in row_parts)
        runs = f"INSERT INTO {t.run_table} ({t.run_columns}) VALUES {values} RETURNING {t.run_pk}"
    if n_events:
        values = ", ".join([t.event_row] * n_events)
        events = f"INSERT INTO {t.event_table} ({t.event_columns}) VALUES {values}"
    inst = f"UPDATE {t.inst_table} SET {t.inst_set} WHERE {t.inst_pk} = %s"
    return _done_sql(t), runs, events, inst
