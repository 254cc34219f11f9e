"""The transition: the work of one state change of one locked instance.

``run(engine, instance_id, body)`` opens one transaction, locks the instance row
(``lock_instance``), hands ``body`` a ``Transition`` that plans in memory (runs to
create, human tasks, events, the routing of tokens: ``routing``), and then writes the
plan at once (``Transition.close``). A condition or hook that raises while planning
therefore leaves nothing to undo; ``advance`` then fails the step and the instance
instead, the context as it was before the step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import traceback as tb
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple, cast

from django.contrib.auth.models import Group
from django.db import DatabaseError, connections, router, transaction
from django.db.models.functions import Now
from django.utils import timezone

from .. import events as ev
from .. import tracing
from ..conf import workflow_settings
from ..context import WorkflowContext, check_size
from ..definition import WorkflowDefinition
from ..exceptions import (
    DefinitionError,
    InvalidAssignee,
    LoopLimitExceeded,
    WorkflowNotFound,
)
from ..models import (
    ACTIVE_INSTANCE_STATUSES,
    HumanTask,
    HumanTaskGroup,
    StepRun,
    StepRunStatus,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowStatus,
)
from ..registry import WorkflowRegistry
from ..steps import BaseHumanStep, BaseMachineStep, StepType, SubWorkflowStep, TimerStep
from . import routing, signalwait, subflows
from .leases import fenced, lost_lease, new_lease
from .left import remember
from .protocol import Engine
from .sql import fastpath, start
from .sql.lock import lock_instance
from .taskrows import group_rows
from .users import assignee_pk, seats

logger = logging.getLogger("django_workflows.engine")


class ClaimedRun(NamedTuple):
    """A run this process holds under a lease: the run, and its lease token."""

    run: StepRun
    token: uuid.UUID


def error_text(exc: BaseException) -> tuple[str, str]:
    """Type, message and traceback text; never frame locals, which may hold secrets."""
    message = f"{type(exc).__name__}: {exc}"
    return message, "".join(tb.format_exception(exc))


class Transition:
    """The work of one transition of one locked instance.

    Routing is planned in memory first (tokens, new runs, human tasks, events); a
    condition or hook that raises therefore leaves nothing to undo in the database.
    ``close()`` then writes it all: one insert for the new runs, one for the events,
    one update of the instance.
    """

    def __init__(
        self,
        engine: Engine,
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
        self.claimed: ClaimedRun | None = None
        # The fast path: (run, token, changes) of a finished run whose fenced update
        # close() sends with the rest in SQL built once (engine.fastpath; on PostgreSQL
        # in one statement).
        self.fenced: tuple[StepRun, uuid.UUID, dict[str, Any]] | None = None
        # The unlocked fast path: the instance's values the plan was made from; the
        # statement locks the row and writes only if it still holds them, else it sets
        # ``changed`` (nothing written).
        self.expect: list[Any] | None = None
        self.changed = False
        self.taking: str | None = None  # "error"/"timeout" while routing a boundary edge

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

    @property
    def graph(self) -> WorkflowDefinition:
        """The definition, for the work that needs step code (only failing a run and
        canceling go on without one)."""
        if self.definition is None:
            raise DefinitionError(f"instance {self.instance.pk} has no registered definition")
        return self.definition

    # -- activation and routing (planned in memory) ------------------------------

    def activate(self, step_name: str) -> None:
        """Start a step on a live token."""
        step = self.graph.steps[step_name]
        run = StepRun(instance=self.instance, step_name=step_name, step_type=str(step.step_type))
        if isinstance(step, BaseMachineStep):
            run.status = StepRunStatus.QUEUED
            run.queued_at = Now()
            run.max_attempts = self.engine.retry_policy(step).max_attempts
            # Held (queued, unclaimed) while the instance is failed, like its other runs.
            if (
                self.claim_next
                and self.claimed is None
                # waiting too: a completed task's next step (the status settles in close)
                and self.instance.status in ACTIVE_INSTANCE_STATUSES
            ):
                token = uuid.uuid4()
                run.status = StepRunStatus.RUNNING
                run.attempt = 1
                for field, value in new_lease(token).items():
                    setattr(run, field, value)
                self.claimed = ClaimedRun(run, token)
        elif isinstance(step, BaseHumanStep):
            run.status = StepRunStatus.WAITING
            self._plan_task(run, step)
        elif isinstance(step, SubWorkflowStep) and subflows.plan(self, run, step):
            pass  # waits for its children (created in close())
        elif isinstance(step, TimerStep):
            due_at = step.get_due_at(self.context(step_name))
            if due_at is not None and timezone.is_naive(due_at):
                raise DefinitionError(f"timer {step_name!r} returned a naive datetime; use UTC")
            run.status = StepRunStatus.SCHEDULED
            run.due_at = due_at if due_at is not None else Now() + step.duration
        elif step.step_type == StepType.SIGNAL:
            if signalwait.activate(self, run, step):  # a buffered signal: consumed at once
                return
        else:  # a gateway (or a sub-workflow step with nothing to wait for) routes at once
            run.status = StepRunStatus.COMPLETED
            run.started_at = run.finished_at = Now()
            self.new_runs.append(run)
            self.event(
                ev.StepExecuted, step_name=step_name, step_type=run.step_type, status="completed"
            )
            self.route(step_name)
            return
        if boundary := self.graph.boundary(step_name, "timeout"):  # armed (engine.boundary)
            run.timeout_at = Now() + boundary.after
        self.new_runs.append(run)
        self.instance.current_steps.append(step_name)

    def _plan_task(self, run: StepRun, step: BaseHumanStep) -> None:
        """One task; with ``assignees``, one per assignee (its ``slot``)."""
        ctx = self.context(run.step_name)
        to: list[tuple[Any, Sequence[str]]]
        if step.assignees is None:
            to = [(assignee_pk(run.step_name, step.get_assignee(ctx)), step.candidate_groups)]
        else:
            to = seats(run.step_name, step.get_assignees(ctx))
            if isinstance(step.completion, int) and step.completion > len(to):
                raise ValueError(
                    f"human step {run.step_name!r}: completion={step.completion} but only "
                    f"{len(to)} assignees"
                )
        title, summary = step.get_title(ctx)[:300], step.get_summary(ctx)[:300]
        due_at = timezone.now() + step.due_in if step.due_in else None
        for slot, (user, groups) in enumerate(to):
            task = HumanTask(
                instance=self.instance,
                step_name=run.step_name,
                slot=slot,
                title=title,
                summary=summary,
                description=step.description,
                assignee_id=user,
                due_at=due_at,
                # Deadlines that act, on the database clock like timers (engine.deadlines).
                remind_at=Now() + step.remind_every if step.remind_every else None,
                escalate_at=Now() + step.escalate_after if step.escalate_after else None,
            )
            # The event gets its task id once the task is inserted (close()).
            self.event(ev.HumanTaskCreated, step_name=run.step_name, task_id=0, title=task.title)
            self.new_tasks.append((run, task, len(self.events) - 1, tuple(groups)))

    def route(self, step_name: str) -> None:
        """Send a token down every outgoing edge of a finished step: live if taken, else dead."""
        ctx, on = self.context(step_name), self.taking  # on: a boundary edge is taken
        for target, live in routing.taken(self.graph, step_name, ctx, on):
            self.deliver(step_name, target, live)

    def deliver(self, source: str, target: str, live: bool) -> None:
        for step_name, by_loop in routing.deliver(
            self.graph, self.instance.tokens, source, target, live
        ):
            if by_loop:
                self._check_loop(source, step_name)
            self.activate(step_name)

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
        saved, n_events = self.snapshot(), len(self.events)
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
            self.restore(saved)
            message, trace = error_text(exc)
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
            self.events.insert(n_events, done)
            for entry in range(len(self.new_tasks)):  # their events moved one place on
                run, task, index, groups = self.new_tasks[entry]
                if index >= n_events:
                    self.new_tasks[entry] = (run, task, index + 1, groups)
        return True

    def attempt_ended(self, run: StepRun, status: str, error: str, trace: str = "") -> None:
        """A machine run's attempt ended without a result: ``status`` "retrying" (it runs
        again) or "failed" (so does the instance, with ``error``)."""
        self.event(
            ev.StepExecuted,
            step_name=run.step_name,
            step_type=run.step_type or "machine",
            status=status,
            attempt=run.attempt,
            error=error,
        )
        if status == "failed":
            self.fail_instance(run.step_name, error, trace)

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
        if went_on and plain(self) and not signalwait.blocks_fast_path(self):
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
            self._close_fenced(self.fenced, last)
            return
        starting = instance._state.adding
        if starting:  # a start: one INSERT, as the plan leaves it, before rows that read it
            self._settle_status()
            connection = connections[router.db_for_write(WorkflowInstance, instance=instance)]
            if start.applies(connection, self.new_runs, bool(self.new_tasks)):
                commit = last and fastpath.commits_in_statement(connection)
                ids = start.insert(
                    connection, instance, self.new_runs, history(self.events), commit=commit
                )
                self._written(self.new_runs, ids, connection)
                transaction.on_commit(partial(ev.deliver, list(self.events), self.engine.event_bus))
                return
            instance.save(force_insert=True)
        if self.new_runs:
            StepRun.objects.bulk_create(self.new_runs)
            self.runnable.extend(
                run.pk
                for run in self.new_runs
                if run.status == StepRunStatus.QUEUED and run.due_at is None
            )
        if self.new_tasks:
            self._write_tasks()
        signalwait.write(self)
        subflows.write(self)
        if not starting:
            self._settle_status()
        finished = instance.status in (WorkflowStatus.COMPLETED, WorkflowStatus.CANCELED)
        connection = connections[router.db_for_write(WorkflowInstance, instance=instance)]
        if not starting and fastpath.writes_instance(connection):
            # PostgreSQL: the instance, its history and the signals nobody consumed, in
            # one statement with the COMMIT.
            signalwait.write_instance(self, connection, history(self.events), finished, last)
        else:
            if not starting:
                if finished:
                    signalwait.discard(self)  # signals nobody consumed
                instance.save(update_fields=list(fastpath.INSTANCE_FIELDS))
            WorkflowEvent.objects.bulk_create(
                WorkflowEvent(instance=instance, type=t, step_name=s, payload=p, created_at=c)
                for t, s, p, c in history(self.events)
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
            subflows.notify_parent(self)

    def _close_fenced(self, fenced: tuple[StepRun, uuid.UUID, dict[str, Any]], last: bool) -> None:
        """The fast path's close: the run's fenced update, the new runs, the events and
        the instance (one statement on PostgreSQL); nothing is written if the lease was
        lost."""
        run, token, changes = fenced
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
            events=history(self.events),
            instance=instance,
            commit=last and fastpath.commits_in_statement(connection),
            expect=self.expect,
        )
        if not as_expected:
            self.changed = True
            self.new_runs, self.events, self.runnable, self.claimed = [], [], [], None
            return
        if not held:
            lost_lease(run.pk)
            self.new_runs, self.events, self.runnable, self.claimed = [], [], [], None
            return
        self._written(self.new_runs, ids, connection)
        transaction.on_commit(
            partial(ev.deliver, list(self.events), self.engine.event_bus), using=alias
        )

    def _written(self, new_runs: list[StepRun], ids: list[int], connection: Any) -> None:
        """The new runs, inserted by hand-written SQL with these ids; the queued ones
        are runnable."""
        for new_run, pk in zip(new_runs, ids, strict=True):
            new_run.pk = pk
            new_run._state.adding = False
            new_run._state.db = connection.alias
        self.runnable.extend(
            new.pk for new in new_runs if new.status == StepRunStatus.QUEUED and new.due_at is None
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
        rows: list[HumanTaskGroup] = []
        for _run, task, index, group_names in self.new_tasks:
            created = cast(ev.HumanTaskCreated, self.events[index])
            self.events[index] = dataclasses.replace(created, task_id=task.pk)
            rows.extend(group_rows(task, group_names))
        if rows:
            HumanTaskGroup.objects.bulk_create(rows)


def fenced_update(run: StepRun, token: uuid.UUID, changes: dict[str, Any]) -> int:
    """RUNNING -> COMPLETED, only while ``token`` is the run's lease; the rows updated."""
    return fenced(run.pk, token).update(
        status=StepRunStatus.COMPLETED,
        changes=changes,
        finished_at=Now(),
        lease_token=None,
        error="",
        traceback="",
    )


def plain(tx: Transition) -> bool:
    """The plan holds only machine runs (queued or claimed), no human task."""
    return not tx.new_tasks and all(
        new.status in (StepRunStatus.QUEUED, StepRunStatus.RUNNING) for new in tx.new_runs
    )


def history(events: list[ev.WorkflowEventBase]) -> list[tuple[str, str, Any, Any]]:
    """The events as history rows: (type, step name, payload, created_at)."""
    return [
        (e.type, getattr(e, "step_name", ""), jsonable(e.payload()), e.timestamp) for e in events
    ]


def jsonable(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in payload.items()}


def definition_for(registry: WorkflowRegistry, instance: WorkflowInstance) -> WorkflowDefinition:
    """The registered definition an instance runs, refused if its graph changed."""
    row = instance.definition
    definition = registry.get_definition(row.name, row.version)
    if definition.checksum != row.checksum:
        raise DefinitionError(
            f"the registered graph of workflow {definition} differs from the stored one; "
            "give the changed graph a new version"
        )
    return definition


def run(
    engine: Engine,
    instance_id: Any,
    body: Callable[[Transition], None],
    *,
    needs_definition: bool | None = True,
    claim_next: bool = False,
    by_task: Any = None,
) -> tuple[WorkflowInstance, list[int], ClaimedRun | None]:
    """Run ``body(tx)`` on the locked instance in one transaction.

    Returns the instance, the runs it made runnable (to dispatch) and, with
    ``claim_next``, the run it created already claimed for the caller to execute.
    """
    with (
        tracing.transition_span(body, instance_id) as span,
        transaction.atomic(using=router.db_for_write(WorkflowInstance)),
    ):
        instance = lock_instance(instance_id, by_task=by_task)
        definition = None
        if needs_definition:
            definition = definition_for(engine.registry, instance)
        elif needs_definition is None:  # failing a run needs no step code: go on without
            with contextlib.suppress(WorkflowNotFound, DefinitionError):
                definition = definition_for(engine.registry, instance)
        tx = Transition(engine, instance, definition, claim_next=claim_next)
        span.describe(tx)
        body(tx)
        tx.close(last=True)  # the block's last statement: it may carry the COMMIT
    remember(instance)
    return instance, tx.runnable, tx.claimed
