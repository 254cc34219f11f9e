"""The sweep's loop, shared by everything it fires (timers, expired leases, task
deadlines, timeout edges, signal waits): each due row in a transition of its own, one
that fails logged while the others go on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("django_workflows.engine")


def each(rows: Iterable[tuple[Any, Any]], fire: Callable[[Any, Any], object], failed: str) -> int:
    """``fire(row_id, instance_id)`` for each row; one that raises is logged
    (``failed % row_id``) and the next goes on. Returns how many went through."""
    handled = 0
    for row_id, instance_id in rows:
        try:
            fire(row_id, instance_id)
            handled += 1
        except Exception:
            logger.exception(failed, row_id)
    return handled
