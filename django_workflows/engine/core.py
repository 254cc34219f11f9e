"""Moved: the engine is split into modules by concern (see ``docs/explanation/engine.md``).

These names stay importable from here for one release.
"""

from .base import BaseExecutionEngine
from .leases import Heartbeat, lease_keeper, worker_id
from .runs import INLINE_CHAIN_LIMIT
from .transition import ClaimedRun, Transition

__all__ = [
    "INLINE_CHAIN_LIMIT",
    "BaseExecutionEngine",
    "ClaimedRun",
    "Heartbeat",
    "Transition",
    "lease_keeper",
    "worker_id",
]
