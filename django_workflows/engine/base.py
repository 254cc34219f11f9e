"""The engine's public API: ``BaseExecutionEngine``.

It owns no SQL and no transition: each method delegates to the module that owns the
concern (``instances``, ``human``, ``runs``, ``sweep``), passing itself down as the
``protocol.Engine`` they need. A backend subclasses it and implements ``dispatch``.
See ``docs/explanation/engine.md`` for the map of the modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.files import File

from .. import events as ev
from .. import tracing
from ..conf import workflow_settings
from ..models import Comment, HumanTask, WorkflowInstance, WorkflowSignal
from ..registry import WorkflowRegistry
from ..registry import registry as default_registry
from ..steps import BaseMachineStep, RetryPolicy
from . import bulk, comments, human, instances, migration, nofm, runs, signals, sweep
from .bulk import TaskCompletion
from .migration import MigrationPlan, MigrationResult
from .runs import Outcome
from .transition import ClaimedRun


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

    # -- backend hooks -------------------------------------------------------------

    def dispatch(self, run_ids: Iterable[int]) -> None:
        """Get runnable machine step runs executed (each through ``process_run``)."""
        raise NotImplementedError

    def executes_inline(self) -> bool:
        """Whether this process executes the next machine step itself, right after a
        transition that activates it (the local engine, outside a caller's transaction)."""
        return False

    def retry_policy(self, step: BaseMachineStep) -> RetryPolicy:
        """The step's ``retry``, else the settings' default policy (read now)."""
        if step.retry is not None:
            return step.retry
        s = workflow_settings
        return RetryPolicy(
            max_attempts=s.DEFAULT_MAX_ATTEMPTS,
            backoff=s.DEFAULT_RETRY_BACKOFF,
            backoff_factor=s.DEFAULT_RETRY_BACKOFF_FACTOR,
            max_backoff=s.DEFAULT_RETRY_MAX_BACKOFF,
        )

    # -- instances -----------------------------------------------------------------

    def start_workflow(
        self,
        name: str,
        version: str | None = None,
        initial_data: dict[str, Any] | None = None,
        business_key: str = "",
        started_by: Any = None,
    ) -> WorkflowInstance:
        """Start ``name`` (the highest version unless given) and run it as far as it goes."""
        return instances.start(self, name, version, initial_data, business_key, started_by)[0]

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
        return instances.get_or_start(
            self,
            name,
            version,
            initial_data,
            business_key,
            started_by,
            idempotency_key=idempotency_key,
            existing=existing,
        )

    def get_instance(self, instance_id: Any) -> WorkflowInstance:
        """The instance, its definition row selected; ``InstanceNotFound`` otherwise."""
        return instances.get_instance(instance_id)

    def cancel_workflow(self, instance_id: Any, reason: str = "") -> WorkflowInstance:
        """Cancel the instance, its open tasks and pending runs. Finished instances conflict."""
        return instances.cancel(self, instance_id, reason)

    def retry(self, instance_id: Any, from_step: str | None = None) -> WorkflowInstance:
        """Re-run a FAILED instance from its failed step (or ``from_step``), context as kept."""
        return instances.retry(self, instance_id, from_step)

    def plan_migration(
        self,
        name: str,
        from_version: str,
        to_version: str,
        *,
        step_map: dict[str, str] | None = None,
        instance_ids: Iterable[Any] | None = None,
    ) -> MigrationPlan:
        """Which active instances (waiting, failed, running) of ``name`` ``from_version``
        (or of ``instance_ids``) can move to ``to_version``, and why not; writes nothing.
        ``step_map`` maps old step names to new ones (a step keeps its name otherwise).
        Bad versions or step names raise ``ValidationError``."""
        return migration.plan(
            self, name, from_version, to_version, step_map=step_map, instance_ids=instance_ids
        )

    def migrate_instances(self, plan: MigrationPlan) -> list[MigrationResult]:
        """Move each movable instance of ``plan`` in one transition (its version, its
        active steps, runs and open tasks), recording ``InstanceMigrated``; an instance
        that changed since the plan, or whose step a worker claimed, is skipped with the
        reason. One ``MigrationResult`` per instance of the plan, in its order."""
        return migration.migrate(self, plan)

    # -- human tasks ---------------------------------------------------------------

    def complete_human_task(
        self,
        instance_id: Any,
        step_name: str,
        user_id: Any = None,
        data: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        check_permission: bool = False,
        comment: str = "",
    ) -> WorkflowInstance:
        """Complete the open task of ``step_name``; raises ``TaskNotOpen`` if there is none.

        ``action`` names one of the step's ``actions`` (a button), whose values are merged
        into ``data``. With ``check_permission`` the user must be allowed to complete the
        task (``permissions.can_complete_task``), else ``PermissionDenied``. ``comment``
        is stored with the completion (a ``Comment`` on the task), in its transaction;
        a step's ``comment_required`` refuses a completion without one.
        """
        return human.complete(
            self,
            instance_id,
            user_id,
            data,
            action,
            check_permission,
            step_name=step_name,
            comment=comment,
        )

    def complete_task(
        self,
        task_id: Any,
        user_id: Any = None,
        data: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        check_permission: bool = False,
        comment: str = "",
    ) -> WorkflowInstance:
        """Complete a human task by its id (what the admin and the API use)."""
        return human.complete(
            self,
            None,  # the task's instance, found by the lock
            user_id,
            data,
            action,
            check_permission,
            task_id=task_id,
            comment=comment,
        )

    def complete_tasks(
        self,
        task_ids: Iterable[Any],
        user: Any,
        *,
        action: str | None = None,
        data: dict[str, Any] | None = None,
        comment: str = "",
    ) -> list[TaskCompletion]:
        """Complete many tasks the same way (bulk approval), each in its own transition
        with the task rule checked: one ``TaskCompletion`` per distinct id, in order. A
        refused task (not found or not visible, not allowed, invalid, no longer open) is
        reported, never raised, and rolls nothing back. At most ``bulk.MAX_TASKS`` ids."""
        return bulk.complete_tasks(self, task_ids, user, action=action, data=data, comment=comment)

    def add_comment(
        self,
        instance_id: Any,
        user: Any,
        text: str,
        *,
        task_id: Any = None,
        attachment: File | None = None,
    ) -> Comment:
        """Comment on an instance, or on its task ``task_id``, with an optional file (kept
        in the default storage). ``user`` must see it (``can_view_instance``, or
        ``can_view_task``); ``text`` 1 to 10,000 characters. Records ``CommentAdded``."""
        return comments.add(self, instance_id, user, text, task_id=task_id, attachment=attachment)

    def claim_task(self, task_id: Any, user: Any) -> HumanTask:
        """Take a task so that others in its candidate groups leave it alone."""
        return human.claim_task(task_id, user)

    def unclaim_task(self, task_id: Any, user: Any) -> HumanTask:
        """Give a claimed task back to its candidate groups: the claimer, or a user who may
        complete any task (``complete_any_task``; superusers)."""
        return human.unclaim_task(task_id, user)

    def reassign_task(self, task_id: Any, to: Any, *, by: Any, reason: str = "") -> HumanTask:
        """Hand an open task to another user (``to``: a user or a pk) or to groups (``to``:
        a list of group names), releasing its claim; ``by`` must be its assignee, its
        claimer or hold ``reassign_any_task``. Records ``HumanTaskReassigned``."""
        return human.reassign_task(self, task_id, to, by=by, reason=reason)

    def task_progress(self, task_id: Any) -> dict[str, Any] | None:
        """For a task of a step with ``assignees`` (one task each): its step's ``rule``
        (``completion``), the completions ``needed``, and its tasks ``completed``,
        ``open`` and ``canceled``; None for a one-task step or an unregistered one."""
        return nofm.progress(self, human.task_by_id(task_id))

    # -- external signals ----------------------------------------------------------

    def discard_signal(self, signal_id: Any, *, by: Any, reason: str = "") -> WorkflowSignal:
        """Mark a pending signal discarded, so no wait consumes it (one that would never
        fit, or was sent by mistake): ``by`` must be allowed to send the instance signals
        (``permissions.can_send_signal``). One transition of its instance, with a
        ``SignalDiscarded`` event naming ``by`` and ``reason``."""
        return signals.discard(self, signal_id, by=by, reason=reason)

    def send_signal(
        self,
        name: str,
        data: dict[str, Any] | None = None,
        *,
        instance_id: Any = None,
        business_key: str | None = None,
        idempotency_key: str | None = None,
        sent_by: Any = None,
    ) -> tuple[WorkflowSignal, bool]:
        """Send the signal ``name`` to one instance: by ``instance_id``, or by the
        ``business_key`` of exactly one active instance. A ``WaitForSignal`` step waiting
        for it consumes it at once (its ``data``, a dict, goes into the context) and the
        instance goes on; else it is buffered until one waits. The same
        ``idempotency_key`` (per instance and name) again returns the stored signal and
        changes nothing. Returns the signal and whether it is new. No permission check:
        callers decide (the API: ``permissions.can_send_signal``)."""
        return signals.send(
            self,
            name,
            data,
            instance_id=instance_id,
            business_key=business_key,
            idempotency_key=idempotency_key,
            sent_by=sent_by,
        )

    # -- the worker protocol -------------------------------------------------------

    def process_run(self, run_id: int) -> list[int]:
        """Claim, execute and commit one machine step run, and the runs of the same
        instance its completions claim for this worker; returns the runs made runnable.
        A run that is not claimable (taken, finished, not due) is left alone."""
        return runs.process_run(self, run_id)

    def claim(self, run_id: int) -> ClaimedRun | None:
        """QUEUED -> RUNNING under a fresh lease: the claimed run, or None if another
        worker has it (or it is not due, or its instance is not running)."""
        return runs.claim(run_id)

    def execute(self, claimed: ClaimedRun, *, claim_next: bool = False) -> Outcome:
        """Run the claimed step's ``execute()`` outside any transaction, then finish or
        fail it under its lease."""
        with tracing.step_span(claimed):
            return runs.execute(self, claimed, claim_next=claim_next)

    def finish(
        self, claimed: ClaimedRun, changes: dict[str, Any], *, claim_next: bool = False
    ) -> Outcome:
        """Commit a step's result under its lease and route on (nothing if the lease
        was lost). ``claim_next``: a machine step it starts comes back claimed."""
        return runs.finish(self, claimed, changes, claim_next=claim_next)

    def fail(
        self,
        claimed: ClaimedRun,
        error: BaseException,
        *,
        changes: dict[str, Any] | None = None,
        retryable: bool = True,
    ) -> list[int]:
        """The step raised ``error``: retry it under its policy, or fail the run and the
        instance (nothing if the lease was lost). Returns the runs made runnable."""
        return runs.fail(self, claimed, error, changes=changes, retryable=retryable)

    def run_chain(self, claimed: ClaimedRun) -> list[int]:
        """Execute a claimed run and the runs its completions claim for this worker."""
        return runs.run_chain(self, claimed)

    # -- the sweep -----------------------------------------------------------------

    def run_due_timers(self, limit: int = 500) -> int:
        """The sweep: fire due timers and the due reminders and escalations of human
        tasks, fail signal waits past their ``timeout``, recover runs whose lease
        expired, send due retries and runs queued for longer than
        ``STALE_QUEUED_SECONDS``. Returns the runs and tasks handled.

        ``qcluster`` runs it by itself; otherwise ``manage.py workflow_sweep``."""
        return sweep.sweep(self, limit) + signals.sweep(self, limit)

    def recover_expired_leases(self, limit: int = 500) -> int:
        """Re-queue runs whose worker died (up to ``CRASH_LIMIT`` times), else fail them."""
        return sweep.recover_expired_leases(self, limit)

    # -- async twins ---------------------------------------------------------------

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

    async def acomplete_tasks(self, *args: Any, **kwargs: Any) -> list[TaskCompletion]:
        return await sync_to_async(self.complete_tasks)(*args, **kwargs)

    async def aadd_comment(self, *args: Any, **kwargs: Any) -> Comment:
        return await sync_to_async(self.add_comment)(*args, **kwargs)

    async def aclaim_task(self, *args: Any, **kwargs: Any) -> HumanTask:
        return await sync_to_async(self.claim_task)(*args, **kwargs)

    async def aunclaim_task(self, *args: Any, **kwargs: Any) -> HumanTask:
        return await sync_to_async(self.unclaim_task)(*args, **kwargs)

    async def areassign_task(self, *args: Any, **kwargs: Any) -> HumanTask:
        return await sync_to_async(self.reassign_task)(*args, **kwargs)

    async def atask_progress(self, task_id: Any) -> dict[str, Any] | None:
        return await sync_to_async(self.task_progress)(task_id)

    async def acancel_workflow(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.cancel_workflow)(*args, **kwargs)

    async def aretry(self, *args: Any, **kwargs: Any) -> WorkflowInstance:
        return await sync_to_async(self.retry)(*args, **kwargs)

    async def aplan_migration(self, *args: Any, **kwargs: Any) -> MigrationPlan:
        return await sync_to_async(self.plan_migration)(*args, **kwargs)

    async def amigrate_instances(self, plan: MigrationPlan) -> list[MigrationResult]:
        return await sync_to_async(self.migrate_instances)(plan)

    async def asend_signal(self, *args: Any, **kwargs: Any) -> tuple[WorkflowSignal, bool]:
        return await sync_to_async(self.send_signal)(*args, **kwargs)

    async def adiscard_signal(self, *args: Any, **kwargs: Any) -> WorkflowSignal:
        return await sync_to_async(self.discard_signal)(*args, **kwargs)

    async def arun_due_timers(self, limit: int = 500) -> int:
        return await sync_to_async(self.run_due_timers)(limit)
