"""``WaitForSignal``: the step that waits for an external signal (``engine.send_signal``).

Kept apart from ``steps`` for its size; exported from ``django_workflows``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .exceptions import DefinitionError
from .steps import BaseStep, StepType


class WaitForSignal(BaseStep):
    """Waits for the external signal ``signal_name`` (``engine.send_signal``), then
    continues. The signal's data is merged into the context, or stored under ``key``.

    A signal sent before the instance gets here is kept and consumed on arrival (one
    signal per wait, oldest first). ``timeout`` (a timedelta from activation): if no
    signal came by then, the sweep fails the step and the instance (retry it to wait
    again). See docs/howto/signals.md.
    """

    step_type = StepType.SIGNAL
    #: The instance waits here for something outside (a signal), not for code.
    waits = True
    signal_name: str = ""
    key: str | None = None
    timeout: timedelta | None = None

    def __init__(
        self,
        signal_name: str,
        *,
        key: str | None = None,
        timeout: timedelta | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(description)
        if not isinstance(signal_name, str) or not signal_name or len(signal_name) > 200:
            raise DefinitionError("WaitForSignal needs a signal name of 1 to 200 characters")
        if key is not None and (not isinstance(key, str) or not key):
            raise DefinitionError("WaitForSignal key must be a non-empty string (or None)")
        if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
            raise DefinitionError("WaitForSignal timeout must be a positive timedelta")
        self.signal_name = signal_name
        self.key = key
        self.timeout = timeout

    @property
    def label(self) -> str:
        return f"signal: {self.signal_name}"

    def changes(self, data: Any) -> dict[str, Any]:
        """What a received signal's ``data`` writes into the context."""
        if self.key is not None:
            return {self.key: data}
        return dict(data) if isinstance(data, dict) else {}

    def cancel_waiting(self, tx: Any, run: Any) -> None:
        """A timeout edge ends the wait: nothing to undo (a later signal is buffered)."""

    def describe(self) -> dict[str, Any]:
        seconds = self.timeout.total_seconds() if self.timeout is not None else None
        return {
            **super().describe(),
            "signal": self.signal_name,
            "key": self.key,
            "timeout_seconds": seconds,
        }
