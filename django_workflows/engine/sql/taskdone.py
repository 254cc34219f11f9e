"""Completing a human task by hand-written SQL, built once per connection from the
models' ``_meta``: reading the open task (PostgreSQL, SQLite), and, for a task alone on
its step on PostgreSQL, writing the task's row and its step run's in one statement.

Through the ORM they are two compiled ``UPDATE`` statements (the task's ``save()`` and
the run's ``update()``), two round trips. The values go through each field's
``get_db_prep_save``, as the ORM sends them.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...models import HumanTask, StepRun, TaskStatus, WorkflowInstance
from . import Converters, concrete_field, saves_unobserved

TASK_FIELDS = ("status", "completed_by", "completed_on_behalf_of", "completed_at", "result")
RUN_FIELDS = ("status", "changes", "finished_at")


class _TaskDone:
    def __init__(self, connection: Any) -> None:
        qn = connection.ops.quote_name
        task, run = HumanTask._meta, StepRun._meta
        self.task_fields = [concrete_field(task, name) for name in TASK_FIELDS]
        self.run_fields = [concrete_field(run, name) for name in RUN_FIELDS]
        task_set = ", ".join(f"{qn(f.column)} = %s" for f in self.task_fields)
        run_set = ", ".join(f"{qn(f.column)} = %s" for f in self.run_fields)
        # The open task of an instance, by id (the instance is locked: it stays open).
        self.task_all = list(task.concrete_fields)
        self.names = [f.attname for f in self.task_all]
        columns = ", ".join(qn(f.column) for f in self.task_all)
        self.read_sql = (
            f"SELECT {columns} FROM {qn(task.db_table)} WHERE {qn(task.pk.column)} = %s "
            f"AND {qn(concrete_field(task, 'instance').column)} = %s "
            f"AND {qn(concrete_field(task, 'status').column)} = %s"
        )
        self.converters = Converters(connection, [(f, task.db_table) for f in self.task_all])
        self.sql = (
            f"WITH task AS (UPDATE {qn(task.db_table)} SET {task_set} "
            f"WHERE {qn(task.pk.column)} = %s) "
            f"UPDATE {qn(run.db_table)} SET {run_set} WHERE {qn(run.pk.column)} = %s"
        )


def reads(connection: Any) -> bool:
    """Whether ``open_task`` serves this database (the engine's tested ones)."""
    return connection.vendor in ("postgresql", "sqlite")


def applies(connection: Any) -> bool:
    """PostgreSQL, while nobody listens to a task's ``pre_save`` or ``post_save`` (which
    only the task's ``save()`` sends)."""
    return connection.vendor == "postgresql" and saves_unobserved(HumanTask)


def _for(connection: Any) -> _TaskDone:
    done = getattr(connection, "_workflows_taskdone", None)
    if done is None:
        done = connection._workflows_taskdone = _TaskDone(connection)
    return done


def open_task(connection: Any, task_id: Any, instance: WorkflowInstance) -> HumanTask | None:
    """Task ``task_id`` of ``instance`` if it is open, else None (as the queryset
    ``filter(pk=..., instance=..., status="open")`` would give it)."""
    done = _for(connection)
    params = [
        HumanTask._meta.pk.get_db_prep_value(task_id, connection, prepared=False),
        WorkflowInstance._meta.pk.get_db_prep_value(instance.pk, connection, prepared=False),
        TaskStatus.OPEN.value,
    ]
    with connection.cursor() as cursor:
        cursor.execute(done.read_sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return HumanTask.from_db(connection.alias, done.names, done.converters.apply(row, connection))


def write(connection: Any, task: HumanTask, changes: dict[str, Any], now: datetime) -> None:
    """``task`` (its completion fields already set) and its step run, completed with
    ``changes`` at ``now`` (PostgreSQL)."""
    done = _for(connection)
    params = [f.get_db_prep_save(getattr(task, f.attname), connection) for f in done.task_fields]
    params.append(HumanTask._meta.pk.get_db_prep_save(task.pk, connection))
    values = ("completed", changes, now)
    params += [
        f.get_db_prep_save(v, connection) for f, v in zip(done.run_fields, values, strict=True)
    ]
    params.append(StepRun._meta.pk.get_db_prep_save(task.step_run_id, connection))
    with connection.cursor() as cursor:
        cursor.execute(done.sql, params)
