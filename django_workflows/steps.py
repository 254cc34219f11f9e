"""Step base classes. Subclass them in your ``workflows.py``; none touches the database."""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .conditions import Condition, compile_condition
from .exceptions import ConditionError, DefinitionError

if TYPE_CHECKING:
    from django import forms

    from .context import WorkflowContext

#: How many completions end a step with ``assignees``: everyone, one, or a number.
Completion = str | int


class StepType(enum.StrEnum):
    MACHINE = "machine"
    HUMAN = "human"
    GATEWAY = "gateway"
    TIMER = "timer"
    SIGNAL = "signal"
    SUBWORKFLOW = "subworkflow"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing machine step is tried, and how long to wait between tries.

    The wait before try ``n + 1`` is ``backoff * backoff_factor ** (n - 1)``,
    capped at ``max_backoff`` (seconds).
    """

    max_attempts: int = 1
    backoff: float = 0.0
    backoff_factor: float = 2.0
    max_backoff: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff < 0 or self.backoff_factor < 1 or self.max_backoff < 0:
            raise ValueError("backoff values must be >= 0 and backoff_factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return min(self.backoff * self.backoff_factor ** (attempt - 1), self.max_backoff)


class BaseStep:
    """What every step has. The step's name is its key in ``WorkflowDefinition.steps``."""

    step_type: StepType
    description: str = ""
    #: May have an error edge (``Edge(..., on="error")``): the step can fail for good.
    can_fail: bool = False
    #: May have a timeout edge (``Edge(..., on="timeout", after=...)``): it waits.
    waits: bool = False

    def cancel_waiting(self, tx: Any, run: Any) -> None:
        """A timeout edge fired while this step waited (``run``, in transition ``tx``):
        stop what it waits for. Open human tasks are canceled by the engine; a step type
        that waits on something else (a child instance, a signal) overrides this."""

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description

    @property
    def label(self) -> str:
        return type(self).__qualname__

    def describe(self) -> dict[str, Any]:
        """The JSON snapshot stored with the definition version (display only, never imported)."""
        return {
            "type": str(self.step_type),
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "description": self.description,
        }


class BaseMachineStep(BaseStep):
    """A step done by code. Override ``execute``; it may be ``def`` or ``async def``.

    ``execute`` runs outside any database transaction and at least once: after a
    crash it runs again, so make it idempotent. Raise to fail the step; the
    instance keeps the context it had before the step.
    """

    step_type = StepType.MACHINE
    can_fail = True
    retry: RetryPolicy | None = None  # None: the DJANGO_WORKFLOWS default
    timeout: float | None = None  # seconds; None: the DJANGO_WORKFLOWS default

    def __init__(
        self,
        description: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(description)
        if retry is not None:
            self.retry = retry
        if timeout is not None:
            self.timeout = timeout

    def execute(self, context: WorkflowContext) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must implement execute(context)")

    def on_success(self, context: WorkflowContext, result: Any) -> None:
        """After ``execute()`` returned ``result``, in the worker, before the outcome is
        committed; its context changes are committed with the step's. Raising fails this
        attempt (the retry policy applies). May be ``async def``."""

    def on_failure(self, context: WorkflowContext, error: BaseException) -> None:
        """Once, after the step failed for good (retries or the crash limit exhausted),
        before the instance fails or takes an error edge; its context changes are kept in
        the instance's context. Raising is logged; ``error`` stays the step's error. May be
        ``async def``."""


#: The kinds of ``BaseHumanStep.action_kinds``.
ACTION_KINDS = ("primary", "danger", "default")


class BaseHumanStep(BaseStep):
    """A step done by a person: the engine opens a ``HumanTask`` and the instance waits.

    Completing the task validates the submitted data (``form_class`` if set) and
    calls ``complete(context, data)``, which by default stores every field in
    the context, so a following condition can read ``context.get('approved')``.
    """

    step_type = StepType.HUMAN
    waits = True
    title: str = ""
    form_class: type[forms.Form] | None = None
    form_schema: dict[str, Any] | None = None
    candidate_groups: Sequence[str] = ()
    due_in: timedelta | None = None
    #: Deadlines that act (all counted from when the task opens): a
    #: ``HumanTaskReminder`` every ``remind_every`` while the task is open, and after
    #: ``escalate_after`` the task moves to the groups ``escalate_to`` names (a list of
    #: group names, or a callable taking the context and returning one), once.
    remind_every: timedelta | None = None
    escalate_after: timedelta | None = None
    escalate_to: Sequence[str] | Callable[[WorkflowContext], Sequence[str]] | None = None
    #: Buttons: each label maps to values merged into the submitted data,
    #: e.g. ``{"Approve": {"approved": True}, "Reject": {"approved": False}}``.
    actions: Mapping[str, Mapping[str, Any]] = {}
    #: A form of its own for an action (a Django form class or a JSON schema), used
    #: instead of the step's form when that button is pressed: a *Reject* that asks
    #: only for comments, e.g. ``{"Reject": RejectForm}``.
    action_forms: Mapping[str, Any] = {}
    #: How an action's button looks on the task pages: ``"primary"``, ``"danger"`` (a
    #: destructive action: the page asks for confirmation) or ``"default"``, e.g.
    #: ``{"Reject": "danger"}``. An action not named: the first is primary, others default.
    action_kinds: Mapping[str, str] = {}
    #: What identifies a task at a glance, in the inbox and the task lists: a format
    #: string over the context (``"{employee}: {amount} EUR"``; a missing key shows as
    #: nothing) or a callable taking the context. Computed when the task opens.
    summary: str | Callable[[WorkflowContext], str] | None = None
    #: The context keys the task page shows as a table above the form, in order: a
    #: mapping of key to label, or a sequence of keys (labelled from the key).
    display_fields: Mapping[str, str] | Sequence[str] = ()
    #: For a step without a form: the context keys a completer may set. None: any key
    #: not yet in the context (keys already there are protected, except those this
    #: step set itself at an earlier completion, as in a rework loop).
    fields: Sequence[str] | None = None
    #: One task per assignee (N-of-M approvals): users (objects or pks; a task assigned
    #: to each) and group names (a task for each group's members), or a callable taking
    #: the context and returning such a list. None: one task (``candidate_groups``,
    #: ``get_assignee``). See docs/howto/n-of-m-approvals.md.
    assignees: Sequence[Any] | Callable[[WorkflowContext], Sequence[Any]] | None = None
    #: With ``assignees``: the completions that end the step, ``"all"``, ``"any"`` or a
    #: number N; the other tasks are then canceled ("completion reached").
    completion: Completion = "all"
    #: With ``assignees``: a condition on each completion's ``result`` (its data and
    #: ``action``), e.g. ``"result.get('approved') == False"``, that ends the step at once.
    veto: str | Callable[[Mapping[str, Any]], Any] | None = None
    #: The actions whose completion needs a comment (``["Reject"]``), or True for
    #: every completion: without one, the engine refuses it.
    comment_required: bool | Sequence[str] = ()

    def __init__(
        self,
        description: str | None = None,
        *,
        title: str | None = None,
        form_class: type[forms.Form] | None = None,
        form_schema: dict[str, Any] | None = None,
        candidate_groups: Sequence[str] | None = None,
        due_in: timedelta | None = None,
        actions: Mapping[str, Mapping[str, Any]] | None = None,
        action_forms: Mapping[str, Any] | None = None,
        action_kinds: Mapping[str, str] | None = None,
        fields: Sequence[str] | None = None,
        summary: str | Callable[[WorkflowContext], str] | None = None,
        display_fields: Mapping[str, str] | Sequence[str] | None = None,
        remind_every: timedelta | None = None,
        escalate_after: timedelta | None = None,
        escalate_to: Sequence[str] | Callable[[WorkflowContext], Sequence[str]] | None = None,
        assignees: Sequence[Any] | Callable[[WorkflowContext], Sequence[Any]] | None = None,
        completion: Completion | None = None,
        veto: str | Callable[[Mapping[str, Any]], Any] | None = None,
        comment_required: bool | Sequence[str] | None = None,
    ) -> None:
        super().__init__(description)
        for name, value in (
            ("title", title),
            ("form_class", form_class),
            ("form_schema", form_schema),
            ("candidate_groups", candidate_groups),
            ("due_in", due_in),
            ("actions", actions),
            ("action_forms", action_forms),
            ("action_kinds", action_kinds),
            ("fields", tuple(fields) if fields is not None else None),
            ("summary", summary),
            ("display_fields", display_fields),
            ("remind_every", remind_every),
            ("escalate_after", escalate_after),
            ("escalate_to", escalate_to),
            ("assignees", assignees),
            ("completion", completion),
            ("veto", veto),
            ("comment_required", comment_required),
        ):
            if value is not None:
                setattr(self, name, value)
        self.check_deadlines()
        self.veto_condition = self._check_assignees()

    def check_deadlines(self) -> None:
        """Refuse deadlines that make no sense (``ValueError``); run again at registration,
        for the values a subclass sets as class attributes."""
        for name in ("due_in", "remind_every", "escalate_after"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise ValueError(f"{name} must be a positive timedelta, not {value!r}")
        overridden = type(self).get_escalate_to is not BaseHumanStep.get_escalate_to
        if (self.escalate_after is None) != (self.escalate_to is None and not overridden):
            raise ValueError(
                "escalate_after and escalate_to (or get_escalate_to()) go together: give "
                "both or neither"
            )
        to = self.escalate_to
        if to is not None and not callable(to) and not are_group_names(to):
            raise ValueError(
                f"escalate_to must be a non-empty list of group names, or a callable "
                f"taking the context; not {to!r}"
            )

    def get_escalate_to(self, context: WorkflowContext) -> list[str]:
        """The names of the groups the task moves to when it escalates (``escalate_to``, or
        what it returns for the context); ``ValueError`` if that is no group names."""
        # Unbound: a function set as a class attribute is not a method of the step.
        to = inspect.getattr_static(self, "escalate_to")
        names = to(context) if callable(to) else to
        if not are_group_names(names):
            raise ValueError(f"escalate_to gave {names!r}, not a non-empty list of group names")
        return list(dict.fromkeys(names))

    def _check_assignees(self) -> Condition | None:
        """``assignees``, ``completion`` and ``veto`` checked, as declared (class
        attributes too); the veto compiled once. A typo fails here, not in a running
        instance. Returns the compiled veto."""
        where = f"human step {type(self).__qualname__}"
        completion = self.completion
        if isinstance(completion, bool) or not (
            completion in ("all", "any") or (isinstance(completion, int) and completion >= 1)
        ):
            raise DefinitionError(
                f'{where}: completion must be "all", "any" or a number >= 1, not {completion!r}'
            )
        if self.assignees is None:
            if self.veto is not None or completion != "all":
                raise DefinitionError(f"{where}: completion and veto need assignees")
            return None
        if not callable(self.assignees):
            if isinstance(self.assignees, str) or not isinstance(self.assignees, Sequence):
                raise DefinitionError(
                    f"{where}: assignees must be a list (users, group names) or a callable"
                )
            if not self.assignees:
                raise DefinitionError(f"{where}: assignees is empty")
            if isinstance(completion, int) and completion > len(self.assignees):
                raise DefinitionError(
                    f"{where}: completion={completion} but only {len(self.assignees)} assignees"
                )
        if self.veto is None:
            return None
        try:
            return compile_condition(_unbound(self, self.veto), name="result")
        except ConditionError as exc:
            raise ConditionError(f"{where}: veto: {exc}") from None

    def get_assignees(self, context: WorkflowContext) -> list[Any]:
        """The assignees of this activation (``assignees``, the callable called), or []
        for a step without them."""
        if self.assignees is None:
            return []
        assignees = _unbound(self, self.assignees)
        found = assignees(context) if callable(assignees) else assignees
        if isinstance(found, str) or not isinstance(found, Sequence | set | frozenset):
            raise TypeError(
                f"assignees() must return a list of users and group names, not {found!r:.80}"
            )
        return list(found)

    def get_title(self, context: WorkflowContext) -> str:
        return self.title or self.description or context.step_name or type(self).__qualname__

    def get_summary(self, context: WorkflowContext) -> str:
        """The task's one-line summary (``summary``), or "" without one."""
        if self.summary is None:
            return ""
        if callable(self.summary):
            return str(self.summary(context))
        return self.summary.format_map(_Blank(context))

    def get_display_fields(self) -> list[tuple[str, str]]:
        """(key, label) of each context value the task page shows, in order."""
        if isinstance(self.display_fields, Mapping):
            return [(str(key), str(label)) for key, label in self.display_fields.items()]
        return [(key, key.replace("_", " ").capitalize()) for key in self.display_fields]

    def get_display(self, context: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
        """(key, label, value) of each context value the task page shows, in order; a
        missing value is None."""
        return [(key, label, context.get(key)) for key, label in self.get_display_fields()]

    def action_keys(self, action: str | None) -> set[str]:
        """The keys ``action``'s own values set (none without an action)."""
        return set(self.actions.get(action, {})) if action is not None else set()

    def get_action_kinds(self) -> list[tuple[str, str]]:
        """(label, kind) of each action, in order: its ``action_kinds`` entry, else
        ``"primary"`` for the first and ``"default"`` for the others."""
        return [
            (label, self.action_kinds.get(label) or ("primary" if index == 0 else "default"))
            for index, label in enumerate(self.actions)
        ]

    def get_assignee(self, context: WorkflowContext) -> Any:
        """The user (or user pk) the task is assigned to; None leaves it to candidate groups."""
        return None

    def clean(self, data: dict[str, Any], action: str | None = None) -> dict[str, Any]:
        """Validate submitted data for ``action`` (the button pressed, or None); raise
        ``ValidationError`` (django.core) to refuse it. The action's own form
        (``action_forms``) if it has one, else the step's form, validates it."""
        import json

        from django.core.exceptions import ValidationError
        from django.core.serializers.json import DjangoJSONEncoder

        from .forms import form_for_step

        form_class = form_for_step(self, action)
        if form_class is None:
            return dict(data)
        form = form_class(data=data)
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        # Dates, decimals and the like as JSON text, so the context can store them.
        return json.loads(json.dumps(form.cleaned_data, cls=DjangoJSONEncoder))

    def complete(self, context: WorkflowContext, data: dict[str, Any]) -> None:
        context.update(data)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "title": self.title,
            "candidate_groups": list(self.candidate_groups),
            "actions": list(self.actions),
            **({"action_forms": sorted(self.action_forms)} if self.action_forms else {}),
            **({"action_kinds": dict(self.action_kinds)} if self.action_kinds else {}),
            **({"fields": list(self.fields)} if self.fields is not None else {}),
            **(
                {
                    "completion": self.completion,
                    "veto": _source(getattr(self, "veto_condition", None)),
                }
                if self.assignees is not None
                else {}
            ),
            **(
                {"comment_required": c if c is True else list(c)}
                if (c := self.comment_required)
                else {}
            ),
        }


def are_group_names(names: Any) -> bool:
    """``names`` is a non-empty list (or tuple) of group names."""
    return (
        isinstance(names, list | tuple)
        and bool(names)
        and all(isinstance(name, str) and 0 < len(name) <= 150 for name in names)
    )


def _unbound(step: BaseStep, value: Any) -> Any:
    """A function given as a class attribute (``assignees = approvers``) is bound to the
    step by Python: called with the context only, as when given to ``__init__``."""
    if inspect.ismethod(value) and value.__self__ is step:
        return value.__func__
    return value


def _source(condition: Condition | None) -> str | None:
    return condition.source if condition is not None else None


class _Blank(dict):
    """The context for ``summary``: a key it does not hold formats as nothing."""

    def __missing__(self, key: str) -> str:
        return ""


class BaseGateway(BaseStep):
    """Routes without doing work; routing happens in the transition that reaches it."""

    step_type = StepType.GATEWAY


class ExclusiveGateway(BaseGateway):
    """Takes the first outgoing edge (in edge order) whose condition holds, else ``default``."""

    def __init__(self, description: str | None = None, *, default: str | None = None) -> None:
        super().__init__(description)
        self.default = default

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "default": self.default}


class ParallelGateway(BaseGateway):
    """Takes every outgoing edge at once."""


class TimerStep(BaseStep):
    """Waits until a due time, then continues.

    Give ``duration`` (a timedelta from activation), or override
    ``get_due_at(context)`` to compute an aware datetime from the context.
    """

    step_type = StepType.TIMER
    waits = True
    duration: timedelta | None = None

    def __init__(self, duration: timedelta | None = None, description: str | None = None) -> None:
        super().__init__(description)
        if duration is not None:
            self.duration = duration

    def get_due_at(self, context: WorkflowContext) -> datetime | None:
        """An absolute due time; None means ``duration`` from now."""
        return None

    def describe(self) -> dict[str, Any]:
        seconds = self.duration.total_seconds() if self.duration is not None else None
        return {**super().describe(), "duration_seconds": seconds}


#: ``input``/``output`` of a SubWorkflowStep: a key mapping, or a function of a context.
Mapping_ = Mapping[str, str] | Callable[[Mapping[str, Any]], Any] | None


class SubWorkflowStep(BaseStep):
    """Starts a child instance of workflow ``workflow`` and waits for it to finish.

    ``input`` gives the child's initial data: ``{"parent_key": "child_key"}``, or a
    function of the parent's context returning the data. ``output`` copies the child's
    final context back: ``{"child_key": "parent_key"}``, or a function of the child's
    context returning the changes. Without them nothing is copied.

    With ``for_each`` (a context key holding a list, or a function of the context
    returning one) one child starts per item, its initial data the ``input`` plus
    ``{item_key: item}``; the step completes when all have, with the list of their
    outputs (``output`` applied to each child; ``{}`` without it) in item order under
    ``results_key`` (default: the step's name). A child that fails fails the step, and
    the other children are canceled.
    """

    step_type = StepType.SUBWORKFLOW
    #: The step waits for outside work (its children): a timeout edge cancels it.
    waits = True
    #: A failed child fails the step: an error edge (``on="error"``) catches it.
    can_fail = True

    def __init__(
        self,
        workflow: str,
        *,
        version: str | None = None,
        input: Mapping_ = None,
        output: Mapping_ = None,
        for_each: str | Callable[[Mapping[str, Any]], Sequence[Any]] | None = None,
        item_key: str = "item",
        results_key: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(description)
        if not isinstance(workflow, str) or not workflow:
            raise DefinitionError("SubWorkflowStep needs the name of the child workflow")
        for name, value in (("input", input), ("output", output)):
            if value is not None and not callable(value) and not _str_mapping(value):
                raise DefinitionError(
                    f"SubWorkflowStep {name}= must be a mapping of context keys or a callable"
                )
        if for_each is not None and not (isinstance(for_each, str) or callable(for_each)):
            raise DefinitionError("SubWorkflowStep for_each= must be a context key or a callable")
        self.workflow, self.version = workflow, version
        self.input, self.output = input, output
        self.for_each, self.item_key, self.results_key = for_each, item_key, results_key

    @property
    def label(self) -> str:
        return f"\u229e {self.workflow}"

    def get_items(self, context: Mapping[str, Any]) -> list[Any] | None:
        """The items to start one child each for; None without ``for_each``."""
        if self.for_each is None:
            return None
        items = (
            self.for_each(context) if callable(self.for_each) else context.get(self.for_each, [])
        )
        if not isinstance(items, list | tuple):
            raise TypeError(f"for_each must give a list, not {type(items).__name__}")
        return list(items)

    def get_input(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The child's initial data from the parent's context."""
        if self.input is None:
            return {}
        if callable(self.input):
            data = self.input(context)
            if not isinstance(data, dict):
                raise TypeError(f"input must return a dict, not {type(data).__name__}")
            return dict(data)
        return {child: context[parent] for parent, child in self.input.items() if parent in context}

    def get_output(self, child_context: Mapping[str, Any]) -> Any:
        """What the child's final context gives the parent (a dict of changes, or with
        ``for_each`` the item's result)."""
        if self.output is None:
            return {}
        if callable(self.output):
            return self.output(child_context)
        return {
            parent: child_context[child]
            for child, parent in self.output.items()
            if child in child_context
        }

    def cancel_waiting(self, tx: Any, run: Any) -> int:
        """Stop waiting (a timeout edge fired): cancel ``run``'s unfinished children, in
        the parent's transition ``tx``. Returns how many were canceled."""
        from .engine.subflow_join import cancel_children  # the engine is a layer up

        return cancel_children(tx, run=run, reason=f"step {run.step_name!r} stopped waiting")

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "workflow": self.workflow,
            "version": self.version,
            "for_each": self.for_each if isinstance(self.for_each, str) else None,
        }


def _str_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )
