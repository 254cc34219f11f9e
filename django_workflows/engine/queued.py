"""What the queue-fed backends share (django-q2, and the contrib Celery, SAQ and Django
Tasks engines): send step-run ids to a queue, never before the rows exist."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

from django.db import transaction

from .base import BaseExecutionEngine

logger = logging.getLogger("django_workflows.engine")


class QueueExecutionEngine(BaseExecutionEngine):
    """An engine whose machine steps run on workers fed by a queue.

    ``dispatch`` sends one message per step-run id once the caller's transaction
    commits (at once when none is open), so a worker never receives an id whose
    rows it cannot see yet, and a rolled-back transition sends nothing. A queue that
    lives in the same database (``sends_in_transaction``) is written in the
    transaction instead: its message commits or rolls back with the rows. A message
    that fails to go out is logged and left to the sweep, which re-sends runs that
    stay QUEUED longer than ``STALE_QUEUED_SECONDS``. Subclasses implement ``send``.
    """

    def send(self, run_id: int) -> None:
        """Put one step-run id on the queue."""
        raise NotImplementedError

    def sends_in_transaction(self) -> bool:
        """Whether ``send`` writes in the caller's transaction (a queue table in the same
        database), so the message may go out before commit."""
        return False

    def dispatch(self, run_ids: Iterable[int]) -> None:
        run_ids = list(run_ids)
        if not run_ids:
            return
        if self.sends_in_transaction():
            self._send_all(run_ids)
        else:
            transaction.on_commit(partial(self._send_all, run_ids))

    def _send_all(self, run_ids: list[int]) -> None:
        for run_id in run_ids:
            try:
                self.send(run_id)
            except Exception:
                # The run stays QUEUED in the database; the sweep sends it again.
                logger.exception("sending step run %s failed; the sweep will send it again", run_id)
