"""The two jobs every backend's worker runs. Importing this module imports no models,
so a worker's app module (a Celery app, a SAQ settings module) can import it early."""

from __future__ import annotations


def run_step(run_id: int) -> None:
    """Execute one step run, then send what it made runnable (through ``get_engine()``)."""
    from ..engine.djangoq import run_step

    run_step(run_id)


def sweep() -> int:
    """Fire due timers, recover expired leases, send due retries and lost messages."""
    from ..engine.djangoq import sweep

    return sweep()
