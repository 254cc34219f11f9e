"""``SAQExecutionEngine``: machine steps run as jobs on SAQ workers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

try:
    from saq import Queue
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "SAQExecutionEngine needs SAQ: pip install 'django-workflows-engine[saq]'"
    ) from exc

from ... import tracing
from ..queued import QueueExecutionEngine
from .worker import HEARTBEAT_SECONDS, queue_from_settings, run_workflow_step

RUN_STEP = run_workflow_step.__qualname__
SEND_TIMEOUT = 10.0


class SAQExecutionEngine(QueueExecutionEngine):
    """Runs machine steps as ``run_workflow_step`` jobs on the SAQ workers of ``queue``.

    ``queue`` is a ``saq.Queue`` (default: one for ``DJANGO_WORKFLOWS["SAQ_URL"]`` and
    ``["SAQ_QUEUE"]``); the engine uses it from an event loop of its own,
    in a background thread, so the sync engine can send from any thread. Give it a
    queue that no other event loop uses. Jobs carry the step-run id only, have no SAQ
    timeout (the engine's step timeout applies) and go out after commit.
    """

    def __init__(self, registry: Any = None, event_bus: Any = None, *, queue: Any = None) -> None:
        super().__init__(registry, event_bus)
        self.queue: Queue = queue if queue is not None else queue_from_settings()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()

    def send(self, run_id: int) -> None:
        # No job key: SAQ drops a job whose key is still incomplete, and a step run may
        # need a new job while its previous one is still active (a retry).
        trace = dict(zip(("traceparent",), tracing.message_args(run_id), strict=False))
        self.run_on_loop(
            self.queue.enqueue(
                RUN_STEP, run_id=run_id, timeout=0, heartbeat=HEARTBEAT_SECONDS, **trace
            )
        )

    def run_on_loop(self, coroutine: Any) -> Any:
        """Run a coroutine on the engine's event loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._event_loop())
        return future.result(SEND_TIMEOUT)

    def close(self) -> None:
        """Disconnect the queue and stop the engine's event loop and its thread."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.queue.disconnect(), loop).result(SEND_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(SEND_TIMEOUT)
            loop.close()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=loop.run_forever, name="django-workflows-saq", daemon=True
                )
                self._thread.start()
                self._loop = loop
            return self._loop
