"""Idempotent starts: a repeated ``POST /instances/`` returns the first instance (200).

Two ways, both scoped to the user:

- **business key**: starting a workflow with a business key the same user already
  started that workflow with returns the first such instance. On PostgreSQL the check
  and the start run under a session-level advisory lock on (user, workflow, business
  key), so two concurrent identical requests start one instance; on other databases
  two *concurrent* identical requests may both start one.
- **``Idempotency-Key`` header**: the engine's ``get_or_start_workflow`` stores the key
  with the instance in the transaction that creates it (unique per user), so a
  repeated or concurrent request with the same key returns the first instance.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from django.db import connection

from ..models import WorkflowInstance

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _lock_id(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(*parts: Any) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock named by ``parts`` (elsewhere: nothing).

    Session-level, not transaction-level: it spans the engine's own transactions and
    its machine steps, which run outside any transaction.
    """
    if connection.vendor != "postgresql":
        yield
        return
    lock_id = _lock_id(*parts)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lock_id])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])


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
