"""What the contrib backends share: send step-run ids to a queue after commit."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial

from django.db import transaction

from ..engine.base import BaseExecutionEngine

logger = logging.getLogger("django_workflows.engine")


class QueueExecutionEngine(BaseExecutionEngine):
    """An engine whose machine steps run on workers fed by an outside queue.

    ``dispatch`` sends one message per step-run id once the caller's transaction
    commits (at once when none is open), so a worker never receives an id whose
    rows it cannot see yet, and a rolled-back transition sends nothing. A message
    that fails to go out is logged and left to the sweep, which re-sends runs that
    stay QUEUED longer than ``STALE_QUEUED_SECONDS``. Subclasses implement ``send``.
    """

    def send(self, run_id: int) -> None:
        """Put one step-run id on the queue."""
        raise NotImplementedError

    def dispatch(self, run_ids: Iterable[int]) -> None:
        run_ids = list(run_ids)
        if run_ids:
            transaction.on_commit(partial(self._send_all, run_ids))

    def _send_all(self, run_ids: list[int]) -> None:
        for run_id in run_ids:
            try:
                self.send(run_id)
            except Exception:
                logger.exception("sending step run %s failed; the sweep will send it again", run_id)
