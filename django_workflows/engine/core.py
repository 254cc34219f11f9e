"""The engine core: every runtime state change of django-workflows happens here.

Each transition is one transaction that locks the instance row, re-checks the
state it starts from, writes, appends history events, and hands the events to
listeners after commit. Machine steps run between two transitions, outside any
transaction: ``claim`` (QUEUED -> RUNNING under a lease token), ``execute()``,
then ``_finish_run`` or ``_fail_run``, which apply the outcome only while the
lease token still matches (fencing). Backends differ only in ``dispatch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import socket
import threading
import time
import traceback as tb
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery, signals
from django.db.models.functions import Now
from django.utils import timezone

from .. import events as ev
from ..conf import workflow_settings
from ..context import WorkflowContext, check_json, check_size
from ..definition import WorkflowDefinition
from ..exceptions import (
    ContextError,
    DefinitionError,
    InstanceNotFound,
    InvalidAssignee,
    LoopLimitExceeded,
    RoutingError,
    StateConflict,
    StepNotFound,
    TaskNotFound,
    TaskNotOpen,
    WorkflowNotFound,
)
from ..forms import form_for_step
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    ACTIVE_RUN_STATUSES,
    DefinitionVersion,
    HumanTask,
    HumanTaskGroup,
    IdempotencyKey,
    StepRun,
    StepRunStatus,
    TaskStatus,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowStatus,
)
from ..permissions import COMPLETE_ANY_TASK, can_complete_task
from ..registry import WorkflowRegistry
from ..registry import registry as default_registry
from ..steps import (
    BaseHumanStep,
    BaseMachineStep,
    BaseStep,
    ExclusiveGateway,
    ParallelGateway,
    RetryPolicy,
    StepType,
    TimerStep,
)
from . import fastpath, lock

logger = logging.getLogger("django_workflows.engine")


def worker_id() -> str:
    """host:pid of this process, read when a run is claimed (a forked worker has its own)."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: How many machine steps of one instance a worker executes back to back before it
#: hands the next one to the queue (so one long chain cannot hold a worker forever).
INLINE_CHAIN_LIMIT = 100


def _error_text(exc: BaseException) -> tuple[str, str]:
    """Type, message and traceback text; never frame locals, which may hold secrets."""
    message = f"{type(exc).__name__}: {exc}"
    return message, "".join(tb.format_exception(exc))


def _user_pk(user: Any) -> Any:
    return getattr(user, "pk", user)


class _Transition:
    """The work of one transition of one locked instance.

    Routing is planned in memory first (tokens, new runs, human tasks, events); a
    condition or hook that raises therefore leaves nothing to undo in the database.
    ``close()`` then writes it all: one insert for the new runs, one for the events,
    one update of the instance.
    """

    def __init__(
        self,
        engine: BaseExecutionEngine,
        instance: WorkflowInstance,
        definition: WorkflowDefinition | None,
        *,
        claim_next: bool = False,
    ) -> None:
        self.engine = engine
        self.instance = instance
        self.definition = definition
        self.events: list[ev.WorkflowEventBase] = []
        self.runnable: list[int] = []
        self.new_runs: list[StepRun] = []
        self.new_tasks: list[tuple[StepRun, HumanTask, int, Sequence[str]]] = []
        # The caller executes the first machine step this transition activates itself:
        # created already claimed, it needs no queue message and no claim.
        self.claim_next = claim_next
        self.claimed: tuple[StepRun, uuid.UUID] | None = None
        # The fast path: (run, token, changes) of a finished run whose fenced update
        # close() sends with the rest in SQL built once (engine.fastpath; on PostgreSQL
        # in one statement).
        self.fenced: tuple[StepRun, uuid.UUID, dict[str, Any]] | None = None
        # The unlocked fast path: the instance's values the plan was made from; the
        # statement locks the row and writes only if it still holds them, else it sets
        # ``changed`` (nothing written).
        self.expect: list[Any] | None = None
        self.changed = False

    # -- events ----------------------------------------------------------------

    def make_event(self, cls: type[ev.WorkflowEventBase], **fields: Any) -> ev.WorkflowEventBase:
        return cls(
            instance_id=str(self.instance.pk),
            workflow_name=self.instance.definition.name,
            workflow_version=self.instance.definition.version,
            timestamp=timezone.now(),
            **fields,
        )

    def event(self, cls: type[ev.WorkflowEventBase], **fields: Any) -> None:
        self.events.append(self.make_event(cls, **fields))

    def context(self, step_name: str, user_id: Any = None, attempt: int = 1) -> WorkflowContext:
        return WorkflowContext(
            self.instance.context,
            instance_id=self.instance.pk,
            step_name=step_name,
            attempt=attempt,
            user_id=user_id,
        )

    def leave(self, step_name: str) -> None:
        """A run of ``step_name`` stopped being active (completed, failed, fired)."""
        if step_name in self.instance.current_steps:
            self.instance.current_steps.remove(step_name)

    # -- activation and routing (planned in memory) ------------------------------

    def activate(self, step_name: str) -> None:
        """Start a step on a live token."""
        step = self.definition.steps[step_name]
        run = StepRun(instance=self.instance, step_name=step_name, step_type=str(step.step_type))
        if isinstance(step, BaseMachineStep):
            run.status = StepRunStatus.QUEUED
            run.queued_at = Now()
            run.max_attempts = self.engine.retry_policy(step).max_attempts
            # Held (queued, unclaimed) while the instance is failed, like its other runs.
            if (
                self.claim_next
                and self.claimed is None
                and self.instance.status == WorkflowStatus.RUNNING
            ):
                token = uuid.uuid4()
                run.status = StepRunStatus.RUNNING
                run.attempt = 1
                run.lease_token = token
                run.lease_expires_at = Now() + timedelta(seconds=workflow_settings.LEASE_SECONDS)
                run.started_at = Now()
                run.worker = worker_id()
                self.claimed = (run, token)
        elif isinstance(step, BaseHumanStep):
            run.status = StepRunStatus.WAITING
            self._plan_task(run, step)
        elif isinstance(step, TimerStep):
            due_at = step.get_due_at(self.context(step_name))
            if due_at is not None and timezone.is_naive(due_at):
                raise DefinitionError(f"timer {step_name!r} returned a naive datetime; use UTC")
            run.status = StepRunStatus.SCHEDULED
            run.due_at = due_at if due_at is not None else Now() + step.duration
        else:  # a gateway routes at once
            run.status = StepRunStatus.COMPLETED
            run.started_at = run.finished_at = Now()
            self.new_runs.append(run)
            self.event(
                ev.StepExecuted, step_name=step_name, step_type="gateway", status="completed"
            )
            self.route(step_name)
            return
        self.new_runs.append(run)
        self.instance.current_steps.append(step_name)

    def _plan_task(self, run: StepRun, step: BaseHumanStep) -> None:
        ctx = self.context(run.step_name)
        task = HumanTask(
            instance=self.instance,
            step_name=run.step_name,
            title=step.get_title(ctx)[:300],
            description=step.description,
            assignee_id=_assignee_pk(run.step_name, step.get_assignee(ctx)),
            due_at=timezone.now() + step.due_in if step.due_in else None,
        )
        # The event gets its task id once the task is inserted (close()).
        self.event(ev.HumanTaskCreated, step_name=run.step_name, task_id=0, title=task.title)
        self.new_tasks.append((run, task, len(self.events) - 1, tuple(step.candidate_groups)))

    def route(self, step_name: str) -> None:
        """Send a token down every outgoing edge of a finished step: live if taken, else dead."""
        step = self.definition.steps[step_name]
        edges = self.definition.outgoing(step_name)
        if not edges:
            return
        ctx = self.context(step_name)
        taken: list[bool]
        if isinstance(step, ParallelGateway):
            taken = [True] * len(edges)
        elif isinstance(step, ExclusiveGateway):
            taken = [False] * len(edges)
            for index, (_edge, condition) in enumerate(edges):
                if condition is None or condition(ctx):
                    taken[index] = True
                    break
            else:
                if step.default is None:
                    raise RoutingError(
                        f"no edge of exclusive gateway {step_name!r} matched and it has no default"
                    )
                taken = [edge.target == step.default for edge, _ in edges]
        else:
            taken = [condition is None or condition(ctx) for _, condition in edges]
            if not any(taken):
                raise RoutingError(
                    f"no outgoing edge of step {step_name!r} matched the context "
                    f"(edges: {', '.join(str(e) for e, _ in edges)})"
                )
        for (edge, _), live in zip(edges, taken, strict=True):
            self.deliver(edge.source, edge.target, live)

    def deliver(self, source: str, target: str, live: bool) -> None:
        if (source, target) in self.definition.back_edges:
            if live:  # a loop restarts its target on its own; a dead loop edge goes nowhere
                self._check_loop(source, target)
                self.instance.tokens.pop(target, None)
                self.activate(target)
            return
        sources = self.definition.forward_sources[target]
        if len(sources) > 1:  # a join: wait for a token from every forward edge
            waiting = self.instance.tokens.setdefault(target, {})
            waiting[source] = bool(waiting.get(source)) or live
            if len(waiting) < len(sources):
                return
            live = any(self.instance.tokens.pop(target).values())
        if live:
            self.activate(target)
        else:  # dead-path elimination: the skipped step passes dead tokens on
            for edge, _ in self.definition.outgoing(target):
                self.deliver(edge.source, edge.target, False)

    def _check_loop(self, source: str, target: str) -> None:
        """Only a loop can give an instance more runs than its graph has steps: bound it."""
        limit = workflow_settings.MAX_STEP_RUNS
        if limit is None:
            return
        runs = StepRun.objects.filter(instance=self.instance).count() + len(self.new_runs)
        if runs >= limit:
            raise LoopLimitExceeded(
                f"the loop {source!r} -> {target!r} went round until the instance had {runs} "
                f"step runs (MAX_STEP_RUNS is {limit}): its exit condition never held"
            )

    def advance(
        self,
        step_name: str,
        *,
        run_pk: int | None = None,
        step_type: str = "",
        changes: dict[str, Any] | None = None,
        attempt: int = 1,
        emit_done: bool = True,
        activate: bool = False,
        refuse_bad_input: bool = False,
    ) -> bool:
        """Merge a finished step's changes and route on from it (or, with ``activate``,
        start it). If that raises (a condition, no matching edge, a hook of the next step),
        the plan is dropped and the step and the instance fail instead, the context kept
        as it was before the step. Returns True if it went on.

        ``refuse_bad_input``: the caller's own data is being applied (a start, a task
        completion): an assignee it names that is no user is raised to the caller, and
        its transaction rolls back, instead of failing the instance."""
        instance = self.instance
        saved = (
            dict(instance.context),
            {k: dict(v) for k, v in instance.tokens.items()},
            list(instance.current_steps),
            len(self.events),
            len(self.new_runs),
            len(self.new_tasks),
            self.claimed,
        )
        try:
            instance.context.update(changes or {})
            check_size(instance.context)
            if activate:
                self.activate(step_name)
            else:
                self.route(step_name)
        except DatabaseError:
            raise
        except Exception as exc:
            if refuse_bad_input and isinstance(exc, InvalidAssignee):
                raise
            context, tokens, current, n_events, n_runs, n_tasks, claimed = saved
            instance.context, instance.tokens, instance.current_steps = context, tokens, current
            del self.events[n_events:]
            del self.new_runs[n_runs:]
            del self.new_tasks[n_tasks:]
            self.claimed = claimed
            message, trace = _error_text(exc)
            if run_pk is not None:
                StepRun.objects.filter(pk=run_pk).update(
                    status=StepRunStatus.FAILED, error=message, traceback=trace
                )
            if not activate:
                self.event(
                    ev.StepExecuted,
                    step_name=step_name,
                    step_type=step_type,
                    status="failed",
                    attempt=attempt,
                    error=message,
                )
            self.fail_instance(step_name, message, trace)
            return False
        if emit_done and not activate:
            done = self.make_event(
                ev.StepExecuted,
                step_name=step_name,
                step_type=step_type,
                status="completed",
                attempt=attempt,
                changes=changes or {},
            )
            self.events.insert(saved[3], done)
            for entry in range(len(self.new_tasks)):  # their events moved one place on
                run, task, index, groups = self.new_tasks[entry]
                if index >= saved[3]:
                    self.new_tasks[entry] = (run, task, index + 1, groups)
        return True

    def fail_instance(self, step_name: str, message: str, trace: str) -> None:
        self.instance.status = WorkflowStatus.FAILED
        self.instance.failed_step = step_name
        self.instance.error = message
        self.instance.error_traceback = trace
        self.event(ev.WorkflowFailed, step_name=step_name, error=message)

    # -- the fast path: plan first, write in close() --------------------------------

    def plan_fenced(self, run: StepRun, token: uuid.UUID, changes: dict[str, Any]) -> bool:
        """Plan ``run``'s completion without writing (``leave`` and ``advance``); when the
        plan holds only machine runs, leave the run's fenced update to ``close()``
        (``self.fenced``). Returns whether the step went on (``advance``)."""
        self.leave(run.step_name)
        went_on = self.advance(
            run.step_name, step_type="machine", changes=changes, attempt=run.attempt
        )
        if went_on and _plain(self):
            self.fenced = (run, token, changes)
        return went_on

    def snapshot(self) -> tuple[Any, ...]:
        i = self.instance
        return (
            dict(i.context),
            {k: dict(v) for k, v in i.tokens.items()},
            list(i.current_steps),
            (i.status, i.failed_step, i.error, i.error_traceback, i.finished_at, i.updated_at),
            (list(self.events), list(self.new_runs), list(self.new_tasks), list(self.runnable)),
            self.claimed,
        )

    def restore(self, saved: tuple[Any, ...]) -> None:
        i = self.instance
        i.context, i.tokens, i.current_steps, fields, lists, self.claimed = saved
        i.status, i.failed_step, i.error, i.error_traceback, i.finished_at, i.updated_at = fields
        self.events, self.new_runs, self.new_tasks, self.runnable = (list(x) for x in lists)

    # -- closing ---------------------------------------------------------------

    def close(self, *, last: bool = False) -> None:
        """Write the plan: new runs and tasks, the instance, the history. ``last``: the
        transaction commits right after (the fast path may send its COMMIT along)."""
        instance = self.instance
        if self.claimed is not None:
            self.claimed[0].input = dict(instance.context)
        if self.fenced is not None:
            self._close_fenced(last)
            return
        if self.new_runs:
            StepRun.objects.bulk_create(self.new_runs)
            self.runnable.extend(
                run.pk
                for run in self.new_runs
                if run.status == StepRunStatus.QUEUED and run.due_at is None
            )
        if self.new_tasks:
            self._write_tasks()
        self._settle_status()
        instance.save(update_fields=list(fastpath.INSTANCE_FIELDS))
        WorkflowEvent.objects.bulk_create(
            WorkflowEvent(
                instance=instance,
                type=event.type,
                step_name=getattr(event, "step_name", ""),
                payload=_jsonable(event.payload()),
                created_at=event.timestamp,
            )
            for event in self.events
        )
        transaction.on_commit(partial(ev.deliver, list(self.events), self.engine.event_bus))

    def _settle_status(self) -> None:
        """The instance's status from its active steps; finished_at once it is done."""
        instance = self.instance
        if instance.status in ACTIVE_INSTANCE_STATUSES and self.definition is not None:
            kinds = {self.definition.steps[name].step_type for name in instance.current_steps}
            if not kinds:
                instance.status = WorkflowStatus.COMPLETED
                instance.tokens = {}
                self.event(ev.WorkflowCompleted)
            elif StepType.MACHINE in kinds:
                instance.status = WorkflowStatus.RUNNING
            else:
                instance.status = WorkflowStatus.WAITING
        if instance.status in (
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELED,
        ):
            instance.finished_at = timezone.now()

    def _close_fenced(self, last: bool) -> None:
        """The fast path's close: the run's fenced update, the new runs, the events and
        the instance (one statement on PostgreSQL); nothing is written if the lease was
        lost."""
        run, token, changes = self.fenced
        instance = self.instance
        self._settle_status()
        # The write alias: on the unlocked path the instance may have been read elsewhere.
        alias = router.db_for_write(WorkflowInstance, instance=instance)
        connection = connections[alias]
        as_expected, held, ids = fastpath.finish(
            connection,
            run_pk=run.pk,
            token=token,
            changes=changes,
            new_runs=self.new_runs,
            events=[
                (
                    event.type,
                    getattr(event, "step_name", ""),
                    _jsonable(event.payload()),
                    event.timestamp,
                )
                for event in self.events
            ],
            instance=instance,
            commit=last and fastpath.commits_in_statement(connection),
            expect=self.expect,
        )
        if not as_expected:
            self.changed = True
            self.new_runs, self.events, self.runnable, self.claimed = [], [], [], None
            return
        if not held:
            _lost_lease(run)
            self.new_runs, self.events, self.runnable, self.claimed = [], [], [], None
            return
        for new_run, pk in zip(self.new_runs, ids, strict=True):
            new_run.pk = pk
            new_run._state.adding = False
            new_run._state.db = connection.alias
        self.runnable.extend(
            new.pk
            for new in self.new_runs
            if new.status == StepRunStatus.QUEUED and new.due_at is None
        )
        transaction.on_commit(
            partial(ev.deliver, list(self.events), self.engine.event_bus), using=alias
        )

    def _write_tasks(self) -> None:
        tasks = []
        for run, task, _, _ in self.new_tasks:
            task.step_run = run
            tasks.append(task)
        HumanTask.objects.bulk_create(tasks)
        # Candidate groups are kept by name: a group created later lets its members in,
        # and a name that matches no group lets nobody in (it never opens the task).
        names = {name for _, _, _, groups in self.new_tasks for name in groups}
        existing = Group.objects.filter(name__in=names).values_list("name", flat=True)
        if names and (missing := names - set(existing)):
            logger.warning(
                "human tasks: no group named %s (yet): until it exists, only the assignee "
                "or a user with complete_any_task may complete the task",
                sorted(missing),
            )
        longest = HumanTaskGroup._meta.get_field("name").max_length
        rows = []
        for _run, task, index, group_names in self.new_tasks:
            self.events[index] = dataclasses.replace(self.events[index], task_id=task.pk)
            rows.extend(
                HumanTaskGroup(task=task, name=name)
                for name in dict.fromkeys(group_names)
                if len(name) <= longest  # a longer name no group can have: nobody is let in
            )
        if rows:
            HumanTaskGroup.objects.bulk_create(rows)


def _fenced_update(run: StepRun, token: uuid.UUID, changes: dict[str, Any]) -> int:
    """RUNNING -> COMPLETED, only while ``token`` is the run's lease; the rows updated."""
    runs = StepRun.objects.filter(pk=run.pk, status=StepRunStatus.RUNNING, lease_token=token)
    return runs.update(
        status=StepRunStatus.COMPLETED,
        changes=changes,
        finished_at=Now(),
        lease_token=None,
        error="",
        traceback="",
    )


def _lost_lease(run: StepRun) -> None:
    logger.warning("step run %s lost its lease; its result is discarded", run.pk)


def _plain(tx: _Transition) -> bool:
    """The plan holds only machine runs (queued or claimed), no human task."""
    return not tx.new_tasks and all(
        new.status in (StepRunStatus.QUEUED, StepRunStatus.RUNNING) for new in tx.new_runs
    )


def _chains_on(definition: WorkflowDefinition, step_name: str) -> bool:
    """Whether routing on from ``step_name`` can only start machine steps (or end the
    workflow) and runs no user code: every outgoing edge is unconditional and leads to a
    machine step that is not a join. The fast path's plan then holds no surprise."""
    for edge, condition in definition.outgoing(step_name):
        if condition is not None or not isinstance(definition.steps[edge.target], BaseMachineStep):
            return False
        back = (edge.source, edge.target) in definition.back_edges
        if not back and len(definition.forward_sources[edge.target]) > 1:
            return False
    return True


def _guard_formless(
    instance: WorkflowInstance,
    task: HumanTask,
    step: BaseHumanStep,
    cleaned: dict[str, Any],
    action: str | None,
) -> None:
    """What a completer may write through a step without a form: the keys it declares
    (``fields``), else new keys only. A key already in the context is the workflow's
    (``amount``, checked by the steps before): changing it needs a declaration, unless
    this step set it itself at an earlier completion (a rework loop)."""
    keys = set(cleaned) - set(step.actions.get(action, {}) if action is not None else {})
    if step.fields is not None:
        refused = sorted(keys - set(step.fields))
        reason = f"not one of the fields step {task.step_name!r} takes ({', '.join(step.fields)})"
    else:
        refused = sorted(key for key in keys if key in instance.context)
        if refused:
            earlier = HumanTask.objects.filter(
                instance=instance, step_name=task.step_name, status=TaskStatus.COMPLETED
            ).values_list("result", flat=True)
            own = {key for result in earlier for key in (result or {})}
            refused = [key for key in refused if key not in own]
        reason = (
            f"already in the workflow's context, and step {task.step_name!r} has no form: it "
            "may only add new keys (declare `fields` on the step to let it change this one)"
        )
    if refused:
        raise ValidationError({key: [reason] for key in refused})


def _assignee_pk(step_name: str, assignee: Any) -> Any:
    """The pk of an existing user, from what ``get_assignee()`` gave; else InvalidAssignee.

    Checked while the transition is planned: an id taken from client data that names
    no user (``424242``, ``"abc"``, ``[1]``) is a clear error, not an IntegrityError at
    commit that would leave the previous step to run again."""
    if assignee is None:
        return None
    user_model = get_user_model()
    pk = assignee.pk if isinstance(assignee, user_model) else assignee
    if isinstance(pk, int | str | uuid.UUID) and not isinstance(pk, bool):
        with contextlib.suppress(ValueError, TypeError, ValidationError):
            found = user_model._default_manager.filter(pk=pk).values_list("pk", flat=True)
            if (found := found.first()) is not None:
                return found
    raise InvalidAssignee(
        f"human step {step_name!r}: its assignee {assignee!r} is not a user "
        "(get_assignee() must return a user, the pk of an existing user, or None)"
    )


def _jsonable(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in payload.items()}


class BaseExecutionEngine:
    """The engine API. Subclasses choose how a runnable machine step gets executed."""

    #: Whether ``process_run`` goes on with the next machine step of the same instance
    #: itself (claimed in the transition that activated it) instead of queueing it.
    chain_steps = True

    def __init__(
        self, registry: WorkflowRegistry | None = None, event_bus: ev.EventBus | None = None
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        if event_bus is None and workflow_settings.EVENT_BUS is not None:
            event_bus = workflow_settings.EVENT_BUS()
        self.event_bus = event_bus

    # -- backend hook ------------------------------------------------------------

    def dispatch(self, run_ids: Iterable[int]) -> None:
        """Get runnable machine step runs executed (each through ``process_run``)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------

    def retry_policy(self, step: BaseMachineStep) -> RetryPolicy:
        if step.retry is not None:
            return step.retry
        s = workflow_settings
        return RetryPolicy(
            max_attempts=s.DEFAULT_MAX_ATTEMPTS,
            backoff=s.DEFAULT_RETRY_BACKOFF,
            backoff_factor=s.DEFAULT_RETRY_BACKOFF_FACTOR,
            max_backoff=s.DEFAULT_RETRY_MAX_BACKOFF,
        )

    def _definition_row(self, definition: WorkflowDefinition) -> DefinitionVersion:
        row, created = DefinitionVersion.objects.get_or_create(
            name=definition.name,
            version=definition.version,
            defaults={
                "graph": definition.graph(),
                "checksum": definition.checksum,
                "description": definition.description,
            },
        )
        if not created and row.checksum != definition.checksum:
            raise DefinitionError(
                f"the graph of workflow {definition} differs from the one stored for that version; "
                "give the changed graph a new version"
            )
        return row

    def _definition_for(self, instance: WorkflowInstance) -> WorkflowDefinition:
        row = instance.definition
        definition = self.registry.get_definition(row.name, row.version)
        if definition.checksum != row.checksum:
            raise DefinitionError(
                f"the registered graph of workflow {definition} differs from the stored one; "
                "give the changed graph a new version"
            )
        return definition

    def _lock_instance(self, instance_id: Any) -> WorkflowInstance:
        """SELECT ... FOR UPDATE of the instance, with its definition row's name, version
        and checksum (its graph stays deferred: see ``engine.lock``)."""
        try:
            connection = connections[router.db_for_write(WorkflowInstance)]
            query = lock.query_for(connection)
            if query is None:
                return (
                    WorkflowInstance.objects.select_for_update(of=("self",))
                    .select_related("definition")
                    .get(pk=instance_id)
                )
            instance = query.fetch(connection, instance_id)
            if instance is None:
                raise WorkflowInstance.DoesNotExist
            return instance
        except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
            # A malformed id (not a UUID) means "not found", not a server error.
            raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None

    def _transition(
        self,
        instance_id: Any,
        body: Callable[[_Transition], None],
        *,
        needs_definition: bool | None = True,
        claim_next: bool = False,
    ) -> tuple[WorkflowInstance, list[int], tuple[StepRun, uuid.UUID] | None]:
        """Run ``body(tx)`` on the locked instance in one transaction.

        Returns the instance, the runs it made runnable (to dispatch) and, with
        ``claim_next``, the run it created already claimed for the caller to execute.
        """
        with transaction.atomic(using=router.db_for_write(WorkflowInstance)):
            instance = self._lock_instance(instance_id)
            definition = None
            if needs_definition:
                definition = self._definition_for(instance)
            elif needs_definition is None:  # failing a run needs no step code: go on without
                with contextlib.suppress(WorkflowNotFound, DefinitionError):
                    definition = self._definition_for(instance)
            tx = _Transition(self, instance, definition, claim_next=claim_next)
            body(tx)
            tx.close(last=True)  # the block's last statement: it may carry the COMMIT
        return instance, tx.runnable, tx.claimed

    def executes_inline(self) -> bool:
        """Whether this process executes the next machine step itself, right after a
        transition that activates it (the local engine, outside a caller's transaction)."""
        return False

    def _go_on(self, runnable: list[int], claimed: tuple[StepRun, uuid.UUID] | None) -> None:
        if claimed is not None:
            runnable = runnable + self._run_chain(claimed)
        self.dispatch(runnable)

    def _check_user(self, user: Any) -> Any:
        pk = _user_pk(user)
        if pk is None or hasattr(user, "pk"):
            return pk
        try:
            exists = get_user_model()._default_manager.filter(pk=pk).exists()
        except (ValueError, TypeError):
            exists = False
        if not exists:
            raise ValueError(f"no user with id {pk!r}")
        return pk

    # -- public API: starting and reading ------------------------------------------

    def start_workflow(
        self,
        name: str,
        version: str | None = None,
        initial_data: dict[str, Any] | None = None,
        business_key: str = "",
        started_by: Any = None,
    ) -> WorkflowInstance:
        """Start ``name`` (the highest version unless given) and run it as far as it goes."""
        return self._start(name, version, initial_data, business_key, started_by)[0]

    def _start(
        self,
        name: str,
        version: str | None,
        initial_data: dict[str, Any] | None,
        business_key: str,
        started_by: Any,
        idempotency: tuple[str, str] | None = None,
        existing: Callable[[], WorkflowInstance | None] | None = None,
    ) -> tuple[WorkflowInstance, bool]:
        """The started instance and True; or what ``existing()`` found, and False."""
        definition = self.registry.get_definition(name, version)
        data = dict(initial_data or {})
        for key, value in data.items():
            if not isinstance(key, str):
                raise ContextError(f"context keys must be strings, not {type(key).__name__}")
            check_json(key, value)
        check_size(data, "the initial data")
        user_pk = self._check_user(started_by)
        with transaction.atomic():
            if existing is not None:
                # The caller's check, in the transaction that would create the instance
                # (a lock it takes there ends with it, before any step runs).
                found = existing()
                if found is not None:
                    return found, False
            instance = WorkflowInstance.objects.create(
                definition=self._definition_row(definition),
                status=WorkflowStatus.RUNNING,
                context=data,
                business_key=business_key or "",
                started_by_id=user_pk,
            )
            if idempotency is not None:
                owner, key = idempotency
                IdempotencyKey.objects.create(
                    owner=owner, key=key, workflow_name=name, instance=instance
                )
            tx = _Transition(self, instance, definition, claim_next=self.executes_inline())
            tx.event(ev.WorkflowStarted, user_id=user_pk, business_key=instance.business_key)
            tx.advance(definition.initial_step, activate=True, refuse_bad_input=True)
            tx.close()
        self._go_on(tx.runnable, tx.claimed)
        return self.get_instance(instance.pk), True

    def get_or_start_workflow(
        self,
        name: str,
        version: str | None = None,
        initial_data: dict[str, Any] | None = None,
        business_key: str = "",
        started_by: Any = None,
        *,
        idempotency_key: str | None = None,
        existing: Callable[[], WorkflowInstance | None] | None = None,
    ) -> tuple[WorkflowInstance, bool]:
        """Start once per ``idempotency_key`` (per user), like ``get_or_create``.

        A repeated call with the same key returns the instance the first call started
        and False. The key is stored in the transaction that creates the instance, so two
        concurrent calls start one instance. A key reused for another workflow conflicts.

        ``existing`` (instead of a key, or with one) is called inside the transaction
        that would create the instance, before it does; an instance it returns is
        returned instead, with False. A transaction-level lock it takes there makes its
        check and the creation one step, and ends before any step runs (the REST API
        finds a user's earlier start with the same business key so).
        """
        if idempotency_key is None and existing is None:
            raise TypeError("get_or_start_workflow() needs an idempotency_key or existing")
        if idempotency_key is not None and (not idempotency_key or len(idempotency_key) > 255):
            raise ValidationError({"idempotency_key": ["must be 1 to 255 characters"]})
        owner = "" if started_by is None else str(_user_pk(started_by))

        def by_key() -> WorkflowInstance | None:
            if idempotency_key is None:
                return None
            row = IdempotencyKey.objects.filter(owner=owner, key=idempotency_key).first()
            if row is None:
                return None
            if row.workflow_name != name:
                raise StateConflict(
                    f"idempotency key {idempotency_key!r} was used to start {row.workflow_name!r}"
                )
            return self.get_instance(row.instance_id)

        found = by_key()
        if found is not None:
            return found, False
        key = None if idempotency_key is None else (owner, idempotency_key)
        try:
            return self._start(name, version, initial_data, business_key, started_by, key, existing)
        except IntegrityError:
            found = by_key()  # a concurrent call with the same key won
            if found is None:
                raise
            return found, False

    def get_instance(self, instance_id: Any) -> WorkflowInstance:
        try:
            return WorkflowInstance.objects.select_related("definition").get(pk=instance_id)
        except (WorkflowInstance.DoesNotExist, ValidationError, ValueError, TypeError):
            # A malformed id (not a UUID) means "not found", not a server error.
            raise InstanceNotFound(f"no workflow instance with id {instance_id!r}") from None

    # -- public API: human tasks ------------------------------------------------

    def complete_human_task(
        self,
        instance_id: Any,
        step_name: str,
        user_id: Any = None,
        data: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        check_permission: bool = False,
    ) -> WorkflowInstance:
        """Complete the open task of ``step_name``; raises ``TaskNotOpen`` if there is none.

        ``action`` names one of the step's ``actions`` (a button), whose values are merged
        into ``data``. With ``check_permission`` the user must be allowed to complete the
        task (``permissions.can_complete_task``), else ``PermissionDenied``.
        """
        return self._complete(
            instance_id, user_id, data, action, check_permission, step_name=step_name
        )

    def complete_task(
        self,
        task_id: Any,
        user_id: Any = None,
        data: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        check_permission: bool = False,
    ) -> WorkflowInstance:
        """Complete a human task by its id (what the admin and the API use)."""
        instance_id = self._task(task_id).instance_id
        return self._complete(instance_id, user_id, data, action, check_permission, task_id=task_id)

    def _task(self, task_id: Any) -> HumanTask:
        try:
            return HumanTask.objects.get(pk=task_id)
        except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
            raise TaskNotFound(f"no human task with id {task_id!r}") from None

    def _complete(
        self,
        instance_id: Any,
        user: Any,
        data: Any,
        action: str | None,
        check_permission: bool,
        *,
        step_name: str | None = None,
        task_id: Any = None,
    ) -> WorkflowInstance:
        user_pk = self._check_user(user)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValidationError({"data": ["must be a JSON object"]})

        def body(tx: _Transition) -> None:
            tasks = HumanTask.objects.filter(instance=tx.instance)
            if task_id is not None:
                tasks = tasks.filter(pk=task_id)
            else:
                if step_name not in tx.definition.steps:
                    raise StepNotFound(f"workflow {tx.definition} has no step {step_name!r}")
                tasks = tasks.filter(step_name=step_name)
            task = tasks.filter(status=TaskStatus.OPEN).select_related("step_run").first()
            if task is None:
                what = f"task {task_id}" if task_id is not None else f"step {step_name!r}"
                raise TaskNotOpen(f"{what} of instance {tx.instance.pk} has no open human task")
            if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
                raise StateConflict(
                    f"instance {tx.instance.pk} is {tx.instance.status}; retry it first"
                )
            if check_permission and not can_complete_task(task, self._user(user)):
                raise PermissionDenied(f"you may not complete task {task.pk} ({task.title})")
            step = tx.definition.steps[task.step_name]
            if not isinstance(step, BaseHumanStep):
                raise StateConflict(f"step {task.step_name!r} is no longer a human step")
            if action is not None and action not in step.actions:
                known = ", ".join(step.actions) or "none"
                raise ValidationError({"action": [f"unknown action {action!r} (known: {known})"]})
            cleaned = step.clean(dict(data), action)
            if form_for_step(step, action) is None:
                _guard_formless(tx.instance, task, step, cleaned, action)
            if action is not None:  # the button's values are the step's own, not the user's
                cleaned.update(step.actions[action])
            ctx = tx.context(task.step_name, user_id=user_pk)
            step.complete(ctx, cleaned)
            changes = ctx.changes
            check_size({**tx.instance.context, **changes})  # refused: nothing changes
            now = timezone.now()
            task.status = TaskStatus.COMPLETED
            task.completed_by_id = user_pk
            task.completed_at = now
            task.result = changes
            task.save(update_fields=["status", "completed_by", "completed_at", "result"])
            StepRun.objects.filter(pk=task.step_run_id).update(
                status=StepRunStatus.COMPLETED, changes=changes, finished_at=now
            )
            tx.event(
                ev.HumanTaskCompleted,
                step_name=task.step_name,
                task_id=task.pk,
                user_id=user_pk,
                data=changes,
            )
            tx.leave(task.step_name)
            tx.advance(
                task.step_name,
                run_pk=task.step_run_id,
                step_type="human",
                changes=changes,
                emit_done=False,
                refuse_bad_input=True,
            )

        instance, runnable, claimed = self._transition(
            instance_id, body, claim_next=self.executes_inline()
        )
        self._go_on(runnable, claimed)
        return self.get_instance(instance.pk)

    def claim_task(self, task_id: Any, user: Any) -> HumanTask:
        """Take a task so that others in its candidate groups leave it alone."""
        user = self._user(user)
        with transaction.atomic():
            task = self._locked_task(task_id)
            if not can_complete_task(task, user, ignore_claim=True):
                raise PermissionDenied(f"you may not claim task {task.pk} ({task.title})")
            if task.claimed_by_id not in (None, user.pk):
                raise StateConflict(f"task {task.pk} is claimed by {task.claimed_by}")
            task.claimed_by = user
            task.save(update_fields=["claimed_by"])
        return task

    def unclaim_task(self, task_id: Any, user: Any) -> HumanTask:
        """Give a claimed task back to its candidate groups: the claimer, or a user who may
        complete any task (``complete_any_task``; superusers)."""
        user = self._user(user)
        with transaction.atomic():
            task = self._locked_task(task_id)
            if task.claimed_by_id is None:
                raise StateConflict(f"task {task.pk} is not claimed")
            if task.claimed_by_id != user.pk and not user.has_perm(COMPLETE_ANY_TASK):
                raise PermissionDenied(f"task {task.pk} is claimed by someone else")
            task.claimed_by = None
            task.save(update_fields=["claimed_by"])
        return task

    def _locked_task(self, task_id: Any) -> HumanTask:
        try:
            task = HumanTask.objects.select_for_update().get(pk=task_id)
        except (HumanTask.DoesNotExist, ValidationError, ValueError, TypeError):
            raise TaskNotFound(f"no human task with id {task_id!r}") from None
        if task.status != TaskStatus.OPEN:
            raise TaskNotOpen(f"task {task.pk} is {task.status}")
        return task

    def _user(self, user: Any) -> Any:
        if user is None:
            raise PermissionDenied("no user: log in first")
        if hasattr(user, "is_authenticated"):
            return user
        try:
            return get_user_model()._default_manager.get(pk=user)
        except (ObjectDoesNotExist, ValueError, TypeError):
            raise ValueError(f"no user with id {user!r}") from None

    # -- public API: cancel and retry ------------------------------------------

    def cancel_workflow(self, instance_id: Any, reason: str = "") -> WorkflowInstance:
        """Cancel the instance, its open tasks and pending runs. Finished instances conflict."""

        def body(tx: _Transition) -> None:
            instance = tx.instance
            if instance.status not in (*ACTIVE_INSTANCE_STATUSES, WorkflowStatus.FAILED):
                raise StateConflict(f"instance {instance.pk} is already {instance.status}")
            StepRun.objects.filter(instance=instance, status__in=ACTIVE_RUN_STATUSES).update(
                status=StepRunStatus.CANCELED, lease_token=None, finished_at=Now()
            )
            HumanTask.objects.filter(instance=instance, status=TaskStatus.OPEN).update(
                status=TaskStatus.CANCELED
            )
            instance.status = WorkflowStatus.CANCELED
            instance.tokens = {}
            instance.current_steps = []
            tx.event(ev.WorkflowCanceled, reason=reason)

        # Canceling needs no step code: it works even when the definition is gone or changed.
        instance, _, _ = self._transition(instance_id, body, needs_definition=False)
        return self.get_instance(instance.pk)

    def retry(self, instance_id: Any, from_step: str | None = None) -> WorkflowInstance:
        """Re-run a FAILED instance from its failed step (or ``from_step``), context as kept."""

        def body(tx: _Transition) -> None:
            instance = tx.instance
            if instance.status != WorkflowStatus.FAILED:
                raise StateConflict(
                    f"instance {instance.pk} is {instance.status}; "
                    "only a failed instance is retried"
                )
            step_name = from_step or instance.failed_step
            if step_name not in tx.definition.steps:
                raise StepNotFound(f"workflow {tx.definition} has no step {step_name!r}")
            instance.status = WorkflowStatus.RUNNING
            instance.failed_step = instance.error = instance.error_traceback = ""
            instance.finished_at = None
            tx.event(ev.WorkflowRetried, step_name=step_name)
            # Runs held while the instance was failed (siblings of the failed branch) go on.
            tx.runnable.extend(
                StepRun.objects.filter(
                    instance=instance, status=StepRunStatus.QUEUED, due_at__isnull=True
                ).values_list("pk", flat=True)
            )
            tx.advance(step_name, activate=True)

        instance, runnable, claimed = self._transition(
            instance_id, body, claim_next=self.executes_inline()
        )
        self._go_on(runnable, claimed)
        return self.get_instance(instance.pk)

    # -- machine steps: claim, execute, commit -------------------------------------

    def process_run(self, run_id: int) -> list[int]:
        """Claim, execute and commit one machine step run; returns the runs it made runnable.

        Does nothing if the run is not claimable (already taken, finished, not due,
        or its instance is not running), so a duplicated message is harmless. If the
        step's completion activates another machine step of the same instance, that
        one is created already claimed and executed here next (a chain needs no queue
        round trip); other runnable runs are returned for dispatching.
        """
        claimed = self._claim(run_id)
        if claimed is None:
            return []
        run, _, token = claimed
        return self._run_chain((run, token))

    def _run_chain(self, claimed: tuple[StepRun, uuid.UUID]) -> list[int]:
        """Execute a claimed run and the runs its completions claim for us, in turn.

        Other runs made runnable on the way are dispatched at once (a parallel branch
        must not wait for this chain); those of the last link are returned."""
        for links_left in range(INLINE_CHAIN_LIMIT, 0, -1):
            run, token = claimed
            runnable, next_claimed = self._execute(
                run, token, claim_next=self.chain_steps and links_left > 1
            )
            if next_claimed is None:
                return runnable
            self.dispatch(runnable)
            claimed = next_claimed
        return []

    def _execute(
        self, run: StepRun, token: uuid.UUID, *, claim_next: bool
    ) -> tuple[list[int], tuple[StepRun, uuid.UUID] | None]:
        instance = run.instance
        try:
            definition = self._definition_for(instance)
            step = definition.steps[run.step_name]
            if not isinstance(step, BaseMachineStep):
                raise DefinitionError(f"step {run.step_name!r} is not a machine step")
            ctx = WorkflowContext(
                run.input,
                instance_id=instance.pk,
                step_name=run.step_name,
                attempt=run.attempt,
                user_id=instance.started_by_id,
            )
        except Exception as exc:
            return self._fail_run(run, token, exc, retryable=False), None
        timeout = (
            step.timeout if step.timeout is not None else workflow_settings.DEFAULT_STEP_TIMEOUT
        )
        try:
            with _Heartbeat(run.pk, token):
                _call_step(step, ctx, timeout)
            changes = ctx.changes
        except Exception as exc:
            return self._fail_run(run, token, exc, changes=_safe_changes(ctx)), None
        return self._finish(run, token, changes, claim_next=claim_next)

    def _claim(self, run_id: int) -> tuple[StepRun, WorkflowInstance, uuid.UUID] | None:
        """QUEUED -> RUNNING under a fresh lease token, in one conditional update.

        Two workers given the same run (a duplicated message) both try; the row lock
        and the ``status = queued`` re-check let exactly one win. Attempts are counted
        here, so a step that kills its worker still runs out of attempts.
        """
        token = uuid.uuid4()
        running = WorkflowInstance.objects.filter(
            pk=OuterRef("instance_id"), status=WorkflowStatus.RUNNING
        )
        updated = (
            StepRun.objects.filter(pk=run_id, status=StepRunStatus.QUEUED)
            .filter(Q(due_at__isnull=True) | Q(due_at__lte=Now()))
            .filter(Exists(running))
            .update(
                status=StepRunStatus.RUNNING,
                attempt=F("attempt") + 1,
                lease_token=token,
                lease_expires_at=Now() + timedelta(seconds=workflow_settings.LEASE_SECONDS),
                started_at=Now(),
                worker=worker_id(),
                due_at=None,
                input=Subquery(
                    WorkflowInstance.objects.filter(pk=OuterRef("instance_id")).values("context")[
                        :1
                    ]
                ),
            )
        )
        if updated != 1:
            return None
        run = StepRun.objects.select_related("instance__definition").get(pk=run_id)
        return run, run.instance, token

    def _finish_run(self, run: StepRun, token: uuid.UUID, changes: dict[str, Any]) -> list[int]:
        """Commit a step's result under its lease token; returns the runs made runnable."""
        return self._finish(run, token, changes)[0]

    def _finish(
        self,
        run: StepRun,
        token: uuid.UUID,
        changes: dict[str, Any],
        *,
        claim_next: bool = False,
    ) -> tuple[list[int], tuple[StepRun, uuid.UUID] | None]:
        unlocked = self._finish_unlocked(run, token, changes, claim_next)
        if unlocked is not None:
            return unlocked

        def body(tx: _Transition) -> None:
            if self._fast_path(tx, run):
                # A plain chain: plan first, then the run's fenced update and every
                # write in SQL built once (close(); one statement on PostgreSQL).
                # Planning runs no user code here and writes nothing, so a lost lease
                # leaves no trace.
                saved = tx.snapshot()
                went_on = tx.plan_fenced(run, token, changes)
                if tx.fenced is not None:
                    return
                # The step failed after all (e.g. the context grew too large): the ORM's
                # writes, in its order (fence first, then the run's failure).
                if _fenced_update(run, token, changes) != 1:
                    tx.restore(saved)
                    _lost_lease(run)
                    return
                if not went_on:
                    StepRun.objects.filter(pk=run.pk).update(
                        status=StepRunStatus.FAILED,
                        error=tx.instance.error,
                        traceback=tx.instance.error_traceback,
                    )
                return
            if _fenced_update(run, token, changes) != 1:
                _lost_lease(run)
                return
            tx.leave(run.step_name)
            tx.advance(
                run.step_name,
                run_pk=run.pk,
                step_type="machine",
                changes=changes,
                attempt=run.attempt,
            )

        _, runnable, claimed = self._transition(run.instance_id, body, claim_next=claim_next)
        return runnable, claimed

    def _finish_unlocked(
        self,
        run: StepRun,
        token: uuid.UUID,
        changes: dict[str, Any],
        claim_next: bool,
    ) -> tuple[list[int], tuple[StepRun, uuid.UUID] | None] | None:
        """PostgreSQL, a plain chain: plan from the instance as this worker last read or
        wrote it, then lock and write in one statement that checks first that the row
        still holds every value the plan was made from (``fastpath.expectation``): the
        same result as locking first, one round trip less. None if it does not apply
        or the instance changed meanwhile (nothing written): lock and plan again."""
        if not StepRun.instance.is_cached(run):
            return None
        instance = run.instance
        if not WorkflowInstance.definition.is_cached(instance):
            return None
        if (
            instance.status != WorkflowStatus.RUNNING
            or instance.finished_at is not None
            or instance._state.adding
        ):
            return None
        # Written where instances are written: the claim may have read it from a replica.
        alias = router.db_for_write(WorkflowInstance, instance=instance)
        connection = connections[alias]
        if connection.vendor != "postgresql":  # the rest: _fast_path_applies
            return None
        try:
            definition = self._definition_for(instance)
        except (WorkflowNotFound, DefinitionError):
            return None
        if not self._fast_path_applies(definition, run, connection):
            return None
        tx = _Transition(self, instance, definition, claim_next=claim_next)
        saved = tx.snapshot()
        tx.expect = fastpath.expectation(connection, instance)  # before planning
        tx.plan_fenced(run, token, changes)
        if tx.fenced is not None:
            with transaction.atomic(using=alias):
                tx.close(last=True)  # the block's last statement: it may carry the COMMIT
            if not tx.changed:
                return tx.runnable, tx.claimed
        tx.restore(saved)  # nothing was written: the locked path starts over
        return None

    def _fast_path_applies(self, definition: WorkflowDefinition, run: StepRun, connection) -> bool:
        return (
            fastpath.supports(connection)
            and _chains_on(definition, run.step_name)
            and not signals.pre_save.has_listeners(WorkflowInstance)
            and not signals.post_save.has_listeners(WorkflowInstance)
        )

    def _fast_path(self, tx: _Transition, run: StepRun) -> bool:
        """Whether finishing ``run`` may take the fast path (``engine.fastpath``)."""
        instance = tx.instance
        return (
            tx.definition is not None
            and instance.status == WorkflowStatus.RUNNING
            and self._fast_path_applies(
                tx.definition, run, connections[instance._state.db or "default"]
            )
        )

    def _fail_run(
        self,
        run: StepRun,
        token: uuid.UUID,
        exc: BaseException,
        *,
        changes: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> list[int]:
        message, trace = _error_text(exc)

        def body(tx: _Transition) -> None:
            runs = StepRun.objects.filter(
                pk=run.pk, status=StepRunStatus.RUNNING, lease_token=token
            )
            step = tx.definition.steps.get(run.step_name) if tx.definition else None
            # The limit is the step's policy as this worker reads it from the definition,
            # not whatever the process that created the run had configured.
            policy = self.retry_policy(step) if isinstance(step, BaseMachineStep) else None
            common = {"error": message, "traceback": trace, "changes": changes or {}}
            if policy is not None:
                common["max_attempts"] = policy.max_attempts
            failures = run.attempt - run.crashes  # a crash is not the step's own failure
            if retryable and policy is not None and failures < policy.max_attempts:
                delay = policy.delay(failures)
                if not runs.update(
                    status=StepRunStatus.QUEUED,
                    queued_at=Now(),
                    lease_token=None,
                    due_at=Now() + timedelta(seconds=delay) if delay else None,
                    **common,
                ):
                    return
                if not delay:
                    tx.runnable.append(run.pk)
                status = "retrying"
            else:
                if not runs.update(
                    status=StepRunStatus.FAILED, lease_token=None, finished_at=Now(), **common
                ):
                    return
                tx.leave(run.step_name)
                status = "failed"
            tx.event(
                ev.StepExecuted,
                step_name=run.step_name,
                step_type="machine",
                status=status,
                attempt=run.attempt,
                error=message,
            )
            if status == "failed":
                tx.fail_instance(run.step_name, message, trace)

        return self._transition(run.instance_id, body, needs_definition=None)[1]

    # -- timers, due retries, expired leases ------------------------------------

    def run_due_timers(self, limit: int = 500) -> int:
        """The sweep: fire due timers, recover runs whose lease expired, send due retries
        and runs queued for longer than ``STALE_QUEUED_SECONDS``.

        Workers call it on a schedule (``manage.py workflow_sweep``); with the local
        engine call it yourself (cron, or that command). Returns how many runs it handled.
        """
        handled = 0
        due_timers = StepRun.objects.filter(
            status=StepRunStatus.SCHEDULED,
            due_at__lte=Now(),
            instance__status__in=ACTIVE_INSTANCE_STATUSES,
        ).values_list("pk", "instance_id")[:limit]
        for run_id, instance_id in due_timers:
            try:
                self.dispatch(self._fire_timer(run_id, instance_id))
                handled += 1
            except Exception:
                logger.exception("firing timer run %s failed", run_id)
        handled += self.recover_expired_leases(limit)
        # Due retries, and runs committed but never sent (a lost message, a crash after
        # commit): sending one twice is harmless, the claim takes it once.
        stale = Now() - timedelta(seconds=workflow_settings.STALE_QUEUED_SECONDS)
        due = list(
            StepRun.objects.filter(
                Q(due_at__lte=Now()) | Q(due_at__isnull=True, queued_at__lte=stale),
                status=StepRunStatus.QUEUED,
                instance__status=WorkflowStatus.RUNNING,
            ).values_list("pk", flat=True)[:limit]
        )
        if due:
            # Sent now: not stale again (nor sent again) for another STALE_QUEUED_SECONDS.
            StepRun.objects.filter(pk__in=due, status=StepRunStatus.QUEUED).update(
                queued_at=Now(), due_at=None
            )
        self.dispatch(due)
        return handled + len(due)

    def _fire_timer(self, run_id: int, instance_id: Any) -> list[int]:
        def body(tx: _Transition) -> None:
            if tx.instance.status not in ACTIVE_INSTANCE_STATUSES:
                return  # a failed instance's timer waits for its retry
            fired = StepRun.objects.filter(
                pk=run_id, status=StepRunStatus.SCHEDULED, due_at__lte=Now()
            ).update(status=StepRunStatus.COMPLETED, started_at=Now(), finished_at=Now())
            if fired != 1:
                return
            step_name = StepRun.objects.values_list("step_name", flat=True).get(pk=run_id)
            tx.leave(step_name)
            tx.advance(step_name, run_pk=run_id, step_type="timer")

        return self._transition(instance_id, body)[1]

    def recover_expired_leases(self, limit: int = 500) -> int:
        """Re-queue runs whose worker stopped answering; fail those that crashed their
        worker more than ``CRASH_LIMIT`` times."""
        expired = StepRun.objects.filter(
            status=StepRunStatus.RUNNING, lease_expires_at__lt=Now()
        ).values_list("pk", "instance_id")[:limit]
        recovered = 0
        for run_id, instance_id in expired:
            try:
                self.dispatch(self._recover(run_id, instance_id))
                recovered += 1
            except Exception:
                logger.exception("recovering step run %s failed", run_id)
        return recovered

    def _recover(self, run_id: int, instance_id: Any) -> list[int]:
        def body(tx: _Transition) -> None:
            run = StepRun.objects.filter(
                pk=run_id, status=StepRunStatus.RUNNING, lease_expires_at__lt=Now()
            ).first()
            if run is None:
                return
            # Re-checked in the update: a heartbeat may have renewed the lease meanwhile.
            runs = StepRun.objects.filter(
                pk=run_id,
                lease_token=run.lease_token,
                status=StepRunStatus.RUNNING,
                lease_expires_at__lt=Now(),
            )
            # A crash (the worker died: a deploy, the OOM killer) is not the step's
            # failure: the step runs again, up to CRASH_LIMIT times, whatever its policy.
            crashes = run.crashes + 1
            limit = workflow_settings.CRASH_LIMIT
            if crashes <= limit:
                if not runs.update(
                    status=StepRunStatus.QUEUED,
                    queued_at=Now(),
                    lease_token=None,
                    crashes=crashes,
                ):
                    return
                tx.runnable.append(run_id)
                status = "retrying"
                error = "lease expired"
            else:
                message = error = (
                    f"step {run.step_name!r} keeps killing its worker: the worker running it "
                    f"died {crashes} times before it finished (lease expired; CRASH_LIMIT is "
                    f"{limit})"
                )
                if not runs.update(
                    status=StepRunStatus.FAILED,
                    lease_token=None,
                    finished_at=Now(),
                    error=message,
                    crashes=crashes,
                ):
                    return
                tx.leave(run.step_name)
                status = "failed"
            tx.event(
                ev.StepExecuted,
                step_name=run.step_name,
                step_type="machine",
                status=status,
                attempt=run.attempt,
                error=error,
            )
            if status == "failed":
                tx.fail_instance(run.step_name, message, "")

        return self._transition(instance_id, body, needs_definition=None)[1]

    # -- async twins ------------------------------------------------------------

    async def astart_workflow(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.start_workflow)(*args, **kwargs)

    async def aget_or_start_workflow(
        self, *args: Any, **kwargs: Any
    ) -> tuple[WorkflowInstance, bool]:
        return await sync_to_async(self.get_or_start_workflow)(*args, **kwargs)

    async def aget_instance(self, instance_id: Any) -> WorkflowInstance:
        return await sync_to_async(self.get_instance)(instance_id)

    async def acomplete_human_task(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.complete_human_task)(*args, **kwargs)

    async def acomplete_task(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.complete_task)(*args, **kwargs)

    async def aclaim_task(self, *args: Any, **kwargs: Any) -> HumanTask:
        return await sync_to_async(self.claim_task)(*args, **kwargs)

    async def aunclaim_task(self, *args: Any, **kwargs: Any) -> HumanTask:
        return await sync_to_async(self.unclaim_task)(*args, **kwargs)

    async def acancel_workflow(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.cancel_workflow)(*args, **kwargs)

    async def aretry(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.retry)(*args, **kwargs)

    async def arun_due_timers(self, limit: int = 500) -> int:
        return await sync_to_async(self.run_due_timers)(limit)


class _LeaseKeeper:
    """One thread per process renews the leases of the steps the process is executing,
    every third of ``LEASE_SECONDS``, so a long step is not taken over while its worker
    is alive. A killed worker stops renewing, and its leases run out. (One shared
    thread: starting a thread per step costs more than a short step.)"""

    def __init__(self) -> None:
        self.held: dict[int, tuple[uuid.UUID, float]] = {}  # run id -> (token, last renewal)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.pid = 0
        self.wake = threading.Event()  # LEASE_SECONDS went down: re-read it, beat on time
        # Held while a beat uses the database, until its connection is closed again.
        self.beating = threading.Lock()
        self.lease = 0.0  # the LEASE_SECONDS the thread's timer was last set from

    def hold(self, run_id: int, token: uuid.UUID) -> None:
        lease = workflow_settings.LEASE_SECONDS
        with self.lock:
            self.held[run_id] = (token, time.monotonic())
            # After a fork (a django-q2 worker) the parent's thread does not exist here.
            if self.thread is None or not self.thread.is_alive() or self.pid != os.getpid():
                self.pid = os.getpid()
                self.lease = lease
                self.thread = threading.Thread(
                    target=self._loop, name="workflow-leases", daemon=True
                )
                self.thread.start()
                return
            shorter = lease < self.lease
            self.lease = lease
        # The thread's own timer (a sixth of a lease, at most 1 s) renews a new run in
        # time; it needs waking (a wake-up per step costs a thread switch) only when the
        # lease got shorter than the one it sleeps for.
        if shorter:
            self.wake.set()

    def release(self, run_id: int) -> None:
        with self.lock:
            self.held.pop(run_id, None)
        # A beat in flight ends (its connection closed) before the step's caller goes on,
        # so no thread of the engine holds a connection once a step has returned. Bounded:
        # a renewal stuck behind a caller's row lock must not hang the step.
        if self.beating.acquire(timeout=RELEASE_WAIT_SECONDS):
            self.beating.release()

    def holds(self, run_id: int) -> bool:
        return run_id in self.held

    def _loop(self) -> None:
        while True:
            lease = workflow_settings.LEASE_SECONDS
            with self.lock:
                self.lease = lease
            self.wake.wait(min(lease / 6, 1.0))
            self.wake.clear()
            now = time.monotonic()
            with self.beating:  # taken before ``due``: a run released after it is not in it
                with self.lock:
                    due = [
                        (run_id, token)
                        for run_id, (token, renewed) in self.held.items()
                        if now - renewed >= lease / 3
                    ]
                for run_id, token in due:
                    self._renew(run_id, token, lease)
                if due:  # a beat is rare (a third of a lease): hold no connection in between
                    connections.close_all()

    def _renew(self, run_id: int, token: uuid.UUID, lease: float) -> None:
        try:
            renewed = StepRun.objects.filter(
                pk=run_id, status=StepRunStatus.RUNNING, lease_token=token
            ).update(lease_expires_at=Now() + timedelta(seconds=lease))
        except Exception:
            # A dropped connection or a database restart: try again at the next beat, on
            # a fresh connection, while the lease may still be saved.
            logger.exception("renewing the lease of step run %s failed", run_id)
            connections.close_all()
            return
        with self.lock:
            if not renewed:  # canceled or taken over: nothing left to keep alive
                self.held.pop(run_id, None)
            elif run_id in self.held:
                self.held[run_id] = (token, time.monotonic())


#: How long releasing a run waits for a lease renewal in flight to finish.
RELEASE_WAIT_SECONDS = 5.0

_lease_keeper = _LeaseKeeper()


class _Heartbeat:
    """Keeps the lease of a run alive while its step executes (``with`` block)."""

    def __init__(self, run_id: int, token: uuid.UUID) -> None:
        self.run_id, self.token = run_id, token

    def __enter__(self) -> _Heartbeat:
        _lease_keeper.hold(self.run_id, self.token)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _lease_keeper.release(self.run_id)


def _safe_changes(ctx: WorkflowContext) -> dict[str, Any]:
    try:
        return ctx.changes
    except ContextError:
        return {}


def _call_step(step: BaseStep, ctx: WorkflowContext, timeout: float | None) -> None:
    """Run ``step.execute(ctx)``, sync or async, within ``timeout`` seconds if given."""
    execute = step.execute  # type: ignore[attr-defined]
    if inspect.iscoroutinefunction(execute):

        async def run() -> None:
            if timeout is None:
                await execute(ctx)
            else:
                await asyncio.wait_for(execute(ctx), timeout)

        async_to_sync(run)()
        return
    if timeout is None:
        execute(ctx)
        return
    # A sync step cannot be interrupted: run it in a thread and stop waiting for it.
    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            execute(ctx)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, name=f"workflow-step-{ctx.step_name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"step {ctx.step_name!r} did not finish within {timeout} seconds")
    if outcome.get("error") is not None:
        raise outcome["error"]  # type: ignore[misc]
