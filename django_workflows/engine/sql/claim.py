"""Claiming a queued run on PostgreSQL: one statement, its SQL built once.

Through the ORM a claim is two round trips, each a compiled query: the conditional
``UPDATE`` (QUEUED -> RUNNING under a fresh lease, the instance's context copied into
the run's input) and a ``SELECT`` of the run with its instance and definition (whose
graph JSON it decoded every time). Here the ``UPDATE ... RETURNING`` and the read of the
instance and the definition's id, name, version and checksum are one data-modifying
``WITH`` statement. The conditions are the ORM claim's (``runs.claim``), so the same run
is claimed by exactly one worker; rows become model instances through ``Model.from_db``
with the ORM's converters, as in ``sql.lock``.
"""

# ruff: noqa: S608 - the SQL names only our own tables and columns (from _meta)

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.db.models.sql import InsertQuery

from ...models import DefinitionVersion, StepRun, WorkflowInstance
from . import Converters, concrete_field
from .lock import DEFINITION_FIELDS


class _ClaimQuery:
    def __init__(self, connection: Any) -> None:
        qn = connection.ops.quote_name
        run, inst, definition = StepRun._meta, WorkflowInstance._meta, DefinitionVersion._meta
        self.run_fields = list(run.concrete_fields)
        self.inst_fields = list(inst.concrete_fields)
        self.def_fields = [concrete_field(definition, name) for name in DEFINITION_FIELDS]
        self.names = [
            [f.attname for f in fields]
            for fields in (self.run_fields, self.inst_fields, self.def_fields)
        ]
        r, i, d = qn(run.db_table), qn(inst.db_table), qn(definition.db_table)
        rc = {f.attname: qn(f.column) for f in self.run_fields}
        ic = {f.attname: qn(f.column) for f in self.inst_fields}
        compiler = InsertQuery(StepRun).get_compiler(connection=connection)
        now, _ = compiler.compile(compiler.prepare_value(run.get_field("started_at"), Now()))
        self.run_pk = run.pk
        inst_pk, inst_fk = qn(inst.pk.column), rc["instance_id"]
        token_type = run.get_field("lease_token").db_type(connection)
        self.sql = (
            f"WITH claimed AS (UPDATE {r} SET {rc['status']} = 'running', "
            f"{rc['attempt']} = {r}.{rc['attempt']} + 1, {rc['due_at']} = NULL, "
            f"{rc['input']} = (SELECT {ic['context']} FROM {i} "
            f"WHERE {i}.{inst_pk} = {r}.{inst_fk}), "
            f"{rc['lease_token']} = %s::{token_type}, "
            f"{rc['lease_expires_at']} = {now} + make_interval(secs => %s), "
            f"{rc['started_at']} = {now}, {rc['worker']} = %s "
            f"WHERE {r}.{qn(run.pk.column)} = %s AND {r}.{rc['status']} = 'queued' "
            f"AND ({r}.{rc['due_at']} IS NULL OR {r}.{rc['due_at']} <= {now}) "
            f"AND EXISTS (SELECT 1 FROM {i} WHERE {i}.{inst_pk} = {r}.{inst_fk} "
            f"AND {i}.{ic['status']} = 'running') "
            f"RETURNING {', '.join(f'{r}.{rc[f.attname]}' for f in self.run_fields)}) "
            f"SELECT {', '.join(f'c.{rc[f.attname]}' for f in self.run_fields)}, "
            f"{', '.join(f'{i}.{ic[f.attname]}' for f in self.inst_fields)}, "
            f"{', '.join(f'{d}.{qn(f.column)}' for f in self.def_fields)} "
            f"FROM claimed c INNER JOIN {i} ON ({i}.{inst_pk} = c.{inst_fk}) "
            f"INNER JOIN {d} ON ({i}.{ic['definition_id']} = "
            f"{d}.{qn(definition.pk.column)})"
        )
        self.token = run.get_field("lease_token")
        self.converters = Converters(
            connection,
            [(f, run.db_table) for f in self.run_fields]
            + [(f, inst.db_table) for f in self.inst_fields]
            + [(f, definition.db_table) for f in self.def_fields],
        )

    def claim(self, connection: Any, run_id: int, fields: dict[str, Any]) -> StepRun | None:
        """The claimed run, its instance and definition row (graph deferred) cached on
        it; None if it was not claimable. ``fields``: ``leases.new_lease``'s."""
        expiry = fields["lease_expires_at"]
        if not (
            type(expiry) is CombinedExpression
            and type(expiry.lhs) is Now
            and type(expiry.rhs) is Value
            and type(expiry.rhs.value) is timedelta
        ):
            raise TypeError("a lease's expiry is Now() + timedelta")
        params = [
            self.token.get_db_prep_value(fields["lease_token"], connection),
            expiry.rhs.value.total_seconds(),
            fields["worker"],
            self.run_pk.get_db_prep_value(run_id, connection),
        ]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        values = self.converters.apply(row, connection)
        n_run, n_inst = len(self.run_fields), len(self.inst_fields)
        alias = connection.alias
        run = StepRun.from_db(alias, self.names[0], values[:n_run])
        instance = WorkflowInstance.from_db(alias, self.names[1], values[n_run : n_run + n_inst])
        definition = DefinitionVersion.from_db(alias, self.names[2], values[n_run + n_inst :])
        WorkflowInstance.definition.field.set_cached_value(instance, definition)
        StepRun.instance.field.set_cached_value(run, instance)
        return run


def query_for(connection: Any) -> _ClaimQuery | None:
    """The claim statement of this connection; None but on PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    query = getattr(connection, "_workflows_claim", None)
    if query is None:
        query = connection._workflows_claim = _ClaimQuery(connection)
    return query
