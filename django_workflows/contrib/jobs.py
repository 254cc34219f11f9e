"""The two jobs every backend's worker runs. Importing this module imports no models,
so a worker's app module (a Celery app, a SAQ settings module) can import it early."""

from __future__ import annotations


def run_step(run_id: int, traceparent: str | None = None) -> None:
    """Execute one step run, then send what it made runnable (through ``get_engine()``);
    ``traceparent``: the span that queued it, when tracing."""
    from ..engine.djangoq import run_step

    run_step(run_id, traceparent)


def sweep() -> int:
    """Fire due timers, recover expired leases, send due retries and lost messages."""
    from ..engine.djangoq import sweep

    return sweep()
