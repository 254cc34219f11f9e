"""Idempotent starts: a repeated ``POST /instances/`` returns the first instance (200).

Two ways, both scoped to the user:

- **business key**: starting a workflow with a business key the same user already
  started that workflow with returns the first such instance. The check runs in the
  engine's transaction that would create the instance (``earlier_start``); on
  PostgreSQL it first takes a transaction-level advisory lock on (user, workflow,
  business key), so two concurrent identical requests start one instance. The lock
  ends when that transaction commits, before any step runs, and a start without a
  business key takes none. On other databases two *concurrent* identical requests
  may both start one.
- **``Idempotency-Key`` header**: the engine's ``get_or_start_workflow`` stores the key
  with the instance in the transaction that creates it (unique per user), so a
  repeated or concurrent request with the same key returns the first instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.db import connections, router

from ..models import WorkflowInstance

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _lock_id(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_in_transaction(*parts: Any) -> None:
    """Take a PostgreSQL advisory lock named by ``parts`` until the transaction ends
    (elsewhere: nothing). Call it inside ``transaction.atomic()``."""
    connection = connections[router.db_for_write(WorkflowInstance)]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(*parts)])


def earlier_start(user: Any, workflow: str, business_key: str) -> Callable[[], Any]:
    """The check ``get_or_start_workflow(existing=...)`` runs in its transaction: the
    user's first instance of ``workflow`` with ``business_key``, under the lock of that
    key, so that a concurrent start with the same key waits for this one to commit."""

    def find() -> Any:
        lock_in_transaction(user.pk, workflow, business_key)
        return first_with_business_key(user, workflow, business_key)

    return find


def first_with_business_key(user: Any, workflow: str, business_key: str) -> Any:
    """The first instance of ``workflow`` that ``user`` started with ``business_key``."""
    if not business_key:
        return None
    return (
        WorkflowInstance.objects.filter(
            started_by=user, definition__name=workflow, business_key=business_key
        )
        .order_by("started_at", "pk")
        .first()
    )
