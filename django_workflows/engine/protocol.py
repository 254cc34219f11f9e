"""What the engine's modules need of the engine that calls them: a small typed Protocol.

``base.BaseExecutionEngine`` passes itself down to the modules that do the work
(``instances``, ``human``, ``runs``, ``sweep``, ``transition``); they never import it,
so imports go one way: the engine class on top, the modules below it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..events import EventBus
    from ..registry import WorkflowRegistry
    from ..steps import BaseMachineStep, RetryPolicy


class Engine(Protocol):
    registry: WorkflowRegistry
    event_bus: EventBus | None
    #: Whether a worker goes on with the next machine step of the same instance itself.
    chain_steps: bool

    def dispatch(self, run_ids: Iterable[int]) -> None:
        """Get runnable machine step runs executed (the backend's one hook)."""

    def executes_inline(self) -> bool:
        """Whether this process executes the next machine step itself, right away."""

    def retry_policy(self, step: BaseMachineStep) -> RetryPolicy:
        """The step's retry policy, else the settings' default."""
