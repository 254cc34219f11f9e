"""Locking an instance for a transition: one statement, its SQL built once.

Every transition starts with ``SELECT ... FOR UPDATE`` of the instance. Through the ORM
that costs a compiled query each time, and its ``select_related("definition")`` decoded
the definition's graph JSON on every step, to read three columns. Here the SQL is built
once per database alias from the models' ``_meta``: the instance's columns and the
definition's id, name, version and checksum (its graph and description are left
deferred: definition rows never change, the checksum guards them). Values pass through
the same converters the ORM applies (``from_db_value``, the backend's), and the rows
become model instances through ``Model.from_db``, as a queryset builds them.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, router
from django.db.models import Subquery
from django.db.transaction import TransactionManagementError

from ...exceptions import InstanceNotFound, TaskNotFound
from ...models import DefinitionVersion, HumanTask, WorkflowInstance
from . import Converters, concrete_field

#: The definition's columns read with the instance: what the engine uses of the row.
DEFINITION_FIELDS = ("id", "name", "version", "checksum")

VENDORS = ("postgresql", "sqlite")


class _LockQuery:
    def __init__(self, connection: Any) -> None:
        qn = connection.ops.quote_name
        inst, definition = WorkflowInstance._meta, DefinitionVersion._meta
        self.inst_fields = list(inst.concrete_fields)
        self.def_fields = [concrete_field(definition, name) for name in DEFINITION_FIELDS]
        self.inst_names = [f.attname for f in self.inst_fields]
        self.def_names = [f.attname for f in self.def_fields]
        self.pk = inst.pk
        i_table, d_table = qn(inst.db_table), qn(definition.db_table)
        columns = [f"{i_table}.{qn(f.column)}" for f in self.inst_fields]
        columns += [f"{d_table}.{qn(f.column)}" for f in self.def_fields]
        fk = concrete_field(inst, "definition")
        sql = (
            f"SELECT {', '.join(columns)} FROM {i_table} INNER JOIN {d_table} "
            f"ON ({i_table}.{qn(fk.column)} = {d_table}.{qn(definition.pk.column)}) "
            f"WHERE {i_table}.{qn(self.pk.column)} = %s"
        )
        features = connection.features
        if features.has_select_for_update:
            sql += " FOR UPDATE"
            if features.has_select_for_update_of:
                sql += f" OF {i_table}"
        self.sql = sql
        # The instance of a human task, found in the same statement.
        task = HumanTask._meta
        self.task_pk = task.pk
        where = f"WHERE {i_table}.{qn(self.pk.column)} = "
        of_task = qn(concrete_field(task, "instance").column)
        self.by_task_sql = sql.replace(
            f"{where}%s",
            f"{where}(SELECT {of_task} FROM {qn(task.db_table)} WHERE {qn(task.pk.column)} = %s)",
        )
        self.converters = Converters(
            connection,
            [(f, inst.db_table) for f in self.inst_fields]
            + [(f, definition.db_table) for f in self.def_fields],
        )

    def fetch(
        self, connection: Any, instance_id: Any, *, by_task: Any = None
    ) -> WorkflowInstance | None:
        """The locked instance with its definition row (graph deferred), or None; with
        ``by_task``, the instance of that human task.

        A malformed id raises ValidationError, ValueError or TypeError, as a queryset's
        ``get(pk=...)`` does."""
        if connection.features.has_select_for_update and connection.get_autocommit():
            # As the ORM's select_for_update(): a lock outside a transaction locks nothing.
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        if by_task is not None:
            sql, pk = self.by_task_sql, self.task_pk.get_db_prep_value(by_task, connection)
        else:
            sql, pk = self.sql, self.pk.get_db_prep_value(instance_id, connection, prepared=False)
        with connection.cursor() as cursor:
            cursor.execute(sql, [pk])
            row = cursor.fetchone()
            if row is None:
                # On PostgreSQL, a lock that waited for a transition which changed the
                # instance's definition (a migration) re-checks the join against the old
                # definition row and finds nothing: read it again, now committed.
                cursor.execute(sql, [pk])
                row = cursor.fetchone()
        if row is None:
            return None
        values = self.converters.apply(row, connection)
        n = len(self.inst_fields)
        instance = WorkflowInstance.from_db(connection.alias, self.inst_names, values[:n])
        definition = DefinitionVersion.from_db(connection.alias, self.def_names, values[n:])
        WorkflowInstance.definition.field.set_cached_value(instance, definition)
        return instance


def query_for(connection: Any) -> _LockQuery | None:
    """The lock query of this connection; None for a vendor the engine's tests do not
    cover (the ORM's query is used there)."""
    # Kept on the connection object (one per thread and alias: the converters are its
    # backend's), not in a global map, which would keep every thread's connection alive.
    query = getattr(connection, "_workflows_lock", None)
    if query is None:
        if connection.vendor not in VENDORS:
            return None
        query = connection._workflows_lock = _LockQuery(connection)
    return query


def lock_instance(instance_id: Any, *, by_task: Any = None) -> WorkflowInstance:
    """SELECT ... FOR UPDATE of the instance, with its definition row's name, version
    and checksum (its graph stays deferred: see ``engine.sql.lock``). ``by_task``: the
    instance of that human task (``instance_id`` unused)."""
    try:
        connection = connections[router.db_for_write(WorkflowInstance)]
        query = query_for(connection)
        if query is None:
            rows = WorkflowInstance.objects.select_for_update(of=("self",))
            rows = rows.select_related("definition")
            if by_task is not None:
                task = HumanTask.objects.filter(pk=by_task).values("instance_id")
                return rows.get(pk=Subquery(task))
            return rows.get(pk=instance_id)
        instance = query.fetch(connection, instance_id, by_task=by_task)
        if instance is None:
            raise WorkflowInstance.DoesNotExist
        return instance
    except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
        # A malformed id (not a UUID) means "not found", not a server error.
        if by_task is not None:
            raise TaskNotFound(f"no human task with id {by_task!r}") from None
        raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None


def definition_row(connection: Any, name: str, version: str) -> DefinitionVersion | None:
    """The stored definition row of ``name`` and ``version`` (its id, name, version and
    checksum; the rest deferred), by SQL built once per connection; None if there is none."""
    cached = getattr(connection, "_workflows_definition", None)
    if cached is None:
        qn, meta = connection.ops.quote_name, DefinitionVersion._meta
        fields = [concrete_field(meta, f) for f in DEFINITION_FIELDS]
        cached = connection._workflows_definition = (
            f"SELECT {', '.join(qn(f.column) for f in fields)} FROM {qn(meta.db_table)} "
            f"WHERE {qn(concrete_field(meta, 'name').column)} = %s "
            f"AND {qn(concrete_field(meta, 'version').column)} = %s",
            [f.attname for f in fields],
        )
    sql, names = cached
    with connection.cursor() as cursor:
        cursor.execute(sql, [name, version])
        row = cursor.fetchone()
    if row is None:
        return None
    return DefinitionVersion.from_db(connection.alias, names, list(row))
