"""Exceptions raised by django-workflows.

Each maps to one kind of failure a caller may want to handle: a bad definition
(raised at registration), a missing object (404 in the API), or a state
conflict (409 in the API).
"""


class WorkflowError(Exception):
    """Base class of every error raised by django-workflows."""


class DefinitionError(WorkflowError, ValueError):
    """A workflow definition is invalid. Raised at registration."""


class ConditionError(DefinitionError):
    """An edge condition string is not allowed or does not parse."""


class ConditionEvaluationError(WorkflowError):
    """A valid condition failed while evaluating against a context."""


class NotFound(WorkflowError, LookupError):
    """Base class of the lookups that found nothing."""


class WorkflowNotFound(NotFound):
    """No definition is registered under that name (and version)."""


class InstanceNotFound(NotFound):
    """No workflow instance has that id."""


class TaskNotFound(NotFound):
    """No human task matches."""


class SignalNotFound(NotFound):
    """No external signal matches."""


class StateConflict(WorkflowError):
    """The object is not in a state that allows the operation."""


class TaskNotOpen(StateConflict):
    """The human task was already completed or canceled."""


class ContextError(WorkflowError, TypeError):
    """A context value is not JSON-serializable."""


class StepNotFound(NotFound):
    """The definition has no step of that name."""


class RoutingError(WorkflowError):
    """No outgoing edge of a step could be taken, or a condition failed to evaluate."""


class UnknownUser(WorkflowError, ValueError):
    """A user given by id (``started_by``, the completing user) does not exist."""


class InvalidAssignee(WorkflowError, ValueError):
    """A human step's ``get_assignee()`` gave something that is not an existing user.

    Checked while the transition is planned. Raised to the caller when its own data
    activated the step (400 in the API); otherwise the step that routed there fails.
    """


class LoopLimitExceeded(WorkflowError):
    """An instance took a loop's back edge past ``MAX_STEP_RUNS`` step runs."""


class StepCrashed(WorkflowError):
    """The error a machine step's ``on_failure`` gets (and an error edge records) when
    the step failed for good because its worker kept dying (``CRASH_LIMIT``)."""
