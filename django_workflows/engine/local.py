from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from functools import partial
from typing import Any

from django.db import transaction

from .base import BaseExecutionEngine


def in_callers_transaction() -> bool:
    """True inside an atomic block the caller opened (not a test case's wrapper)."""
    connection = transaction.get_connection()
    return connection.in_atomic_block and not all(
        block._from_testcase for block in connection.atomic_blocks
    )


class LocalExecutionEngine(BaseExecutionEngine):
    """Runs machine steps in the calling process, right after the transition that queued them.

    ``start_workflow`` and ``complete_human_task`` return once the instance has
    gone as far as it can: completed, failed, or waiting for a person or a timer.
    Parallel branches run one after another. Called inside your own
    ``transaction.atomic()`` block, the steps run when that block commits (and not at
    all if it rolls back), so ``execute()`` never runs inside a transaction. Call
    ``run_due_timers()`` (``manage.py workflow_sweep``) to fire timers and delayed retries.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = threading.local()  # the runs waiting to be processed on this thread

    def executes_inline(self) -> bool:
        return not in_callers_transaction()

    def dispatch(self, run_ids: Iterable[int]) -> None:
        run_ids = list(run_ids)
        if not run_ids:
            return
        if in_callers_transaction():
            transaction.on_commit(partial(self._drain, run_ids))
        else:
            self._drain(run_ids)

    def _drain(self, run_ids: list[int]) -> None:
        pending: deque[int] | None = getattr(self._state, "pending", None)
        if pending is not None:  # called from a step run being processed: queue behind it
            pending.extend(run_ids)
            return
        self._state.pending = pending = deque(run_ids)
        try:
            while pending:
                pending.extend(self.process_run(pending.popleft()))
        finally:
            self._state.pending = None
