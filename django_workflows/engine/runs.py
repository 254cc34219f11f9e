"""The worker protocol: claim a run, execute its step, finish or fail it.

A worker (any backend) does, for a run id taken from its queue::

    claimed = engine.claim(run_id)            # QUEUED -> RUNNING under a lease, or None
    outcome = engine.execute(claimed)         # execute() outside any transaction, then
                                              # finish() or fail() under the lease
    engine.dispatch(outcome.runnable)

``process_run(run_id)`` does all of it, and goes on with the next machine step of the
same instance when the finishing transition created it already claimed (a chain needs
no queue round trip). Every outcome is written only while the run's lease token still
holds (``leases.fenced``), so a duplicated, late or lost message changes nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from django.db import connections, router, transaction
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Now

from .. import tracing
from ..conf import workflow_settings
from ..context import WorkflowContext
from ..exceptions import ContextError, DefinitionError
from ..models import StepRun, StepRunStatus, WorkflowInstance, WorkflowStatus
from ..steps import BaseMachineStep, BaseStep
from . import boundary, chained, subflow_join, transition
from .leases import Heartbeat, fenced, lost_lease, new_lease
from .protocol import Engine
from .sql import claim as claim_sql
from .transition import ClaimedRun, Transition, error_text, fenced_update

logger = logging.getLogger("django_workflows.engine")

#: How many machine steps of one instance a worker executes back to back before it
#: hands the next one to the queue (so one long chain cannot hold a worker forever).
INLINE_CHAIN_LIMIT = 100


class Outcome(NamedTuple):
    """What a finished or failed run left to do: runs to dispatch, and the next run of
    the same instance already claimed for this worker (``claim_next``), if any."""

    runnable: list[int]
    next: ClaimedRun | None = None


def claim(run_id: int) -> ClaimedRun | None:
    """QUEUED -> RUNNING under a fresh lease token, in one conditional update.

    Two workers given the same run (a duplicated message) both try; the row lock
    and the ``status = queued`` re-check let exactly one win. Attempts are counted
    here, so a step that kills its worker still runs out of attempts.
    """
    token = uuid.uuid4()
    connection = connections[router.db_for_write(StepRun)]
    query = claim_sql.query_for(connection)
    if query is not None:  # PostgreSQL: the update and the reads in one statement
        run = query.claim(connection, run_id, new_lease(token))
        return None if run is None else ClaimedRun(run, token)
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
            due_at=None,
            input=Subquery(
                WorkflowInstance.objects.filter(pk=OuterRef("instance_id")).values("context")[:1]
            ),
            **new_lease(token),
        )
    )
    if updated != 1:
        return None
    return ClaimedRun(StepRun.objects.select_related("instance__definition").get(pk=run_id), token)


def process_run(engine: Engine, run_id: int) -> list[int]:
    """Claim, execute and commit one machine step run; returns the runs it made runnable.

    Does nothing if the run is not claimable (already taken, finished, not due,
    or its instance is not running), so a duplicated message is harmless. If the
    step's completion activates another machine step of the same instance, that
    one is created already claimed and executed here next (a chain needs no queue
    round trip); other runnable runs are returned for dispatching.
    """
    claimed = claim(run_id)
    if claimed is None:
        # Not a machine run to claim: maybe a parent's waiting sub-workflow run, sent
        # when one of its children finished (engine.subflows).
        runnable, joined = subflow_join.join(engine, run_id, claim_next=engine.chain_steps)
        return runnable + (run_chain(engine, joined) if joined is not None else [])
    return run_chain(engine, claimed)


def run_chain(engine: Engine, claimed: ClaimedRun) -> list[int]:
    """Execute a claimed run and the runs its completions claim for us, in turn.

    Other runs made runnable on the way are dispatched at once (a parallel branch
    must not wait for this chain); those of the last link are returned."""
    for links_left in range(INLINE_CHAIN_LIMIT, 0, -1):
        with tracing.step_span(claimed):
            outcome = execute(engine, claimed, claim_next=engine.chain_steps and links_left > 1)
        if outcome.next is None:
            return outcome.runnable
        engine.dispatch(outcome.runnable)
        claimed = outcome.next
    return []


def go_on(engine: Engine, runnable: list[int], claimed: ClaimedRun | None) -> None:
    """After a transition: execute the run it claimed for this process, dispatch the rest."""
    if claimed is not None:
        runnable = runnable + run_chain(engine, claimed)
    engine.dispatch(runnable)


def execute(engine: Engine, claimed: ClaimedRun, *, claim_next: bool = False) -> Outcome:
    """Run the claimed step's ``execute()`` outside any transaction, under a heartbeat,
    then ``finish`` or ``fail`` it."""
    run, token = claimed
    instance = run.instance
    try:
        definition = transition.definition_for(engine.registry, instance)
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
        return Outcome(fail(engine, claimed, exc, retryable=False))
    timeout = step.timeout if step.timeout is not None else workflow_settings.DEFAULT_STEP_TIMEOUT
    try:
        with Heartbeat(run.pk, token):
            result = call_step(step, ctx, timeout)
            # Before the outcome is committed: its changes go with the step's, and if
            # it raises, this attempt failed (the retry policy applies).
            boundary.call_hook(step.on_success, ctx, result)
        changes = ctx.changes
    except Exception as exc:
        hook_changes = None
        if boundary.failed_for_good(engine, step, run):  # on_failure, once, in the worker
            hook_changes = boundary.on_failure(
                step,
                WorkflowContext(
                    run.input,
                    instance_id=instance.pk,
                    step_name=run.step_name,
                    attempt=run.attempt,
                    user_id=instance.started_by_id,
                ),
                exc,
            )
        return Outcome(
            fail(engine, claimed, exc, changes=safe_changes(ctx), hook_changes=hook_changes)
        )
    return finish(engine, claimed, changes, claim_next=claim_next)


def finish(
    engine: Engine,
    claimed: ClaimedRun,
    changes: dict[str, Any],
    *,
    claim_next: bool = False,
) -> Outcome:
    """Commit a step's result under its lease token and route on. A worker that lost
    its lease changes nothing (its result is discarded)."""
    unlocked = chained.finish_unlocked(engine, claimed, changes, claim_next)
    if unlocked is not None:
        return Outcome(*unlocked)
    run, token = claimed

    def body(tx: Transition) -> None:
        if chained.applies_to(tx, run):
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
            if fenced_update(run, token, changes) != 1:
                tx.restore(saved)
                lost_lease(run.pk)
                return
            if not went_on:
                StepRun.objects.filter(pk=run.pk).update(
                    status=StepRunStatus.FAILED,
                    error=tx.instance.error,
                    traceback=tx.instance.error_traceback,
                )
            return
        if fenced_update(run, token, changes) != 1:
            lost_lease(run.pk)
            return
        tx.leave(run.step_name)
        tx.advance(
            run.step_name,
            run_pk=run.pk,
            step_type="machine",
            changes=changes,
            attempt=run.attempt,
        )

    _, runnable, next_claimed = transition.run(engine, run.instance_id, body, claim_next=claim_next)
    return Outcome(runnable, next_claimed)


def fail(
    engine: Engine,
    claimed: ClaimedRun,
    exc: BaseException,
    *,
    changes: dict[str, Any] | None = None,
    retryable: bool = True,
    hook_changes: dict[str, Any] | None = None,
) -> list[int]:
    """The step raised: retry it under its policy (read from the definition by this
    worker), or fail the run and then take its error edge or fail the instance
    (``boundary.failed``, with ``on_failure``'s ``hook_changes``). Returns the runs made
    runnable."""
    run, token = claimed
    message, trace = error_text(exc)

    def body(tx: Transition) -> None:
        runs = fenced(run.pk, token)
        step = tx.definition.steps.get(run.step_name) if tx.definition else None
        # The limit is the step's policy as this worker reads it from the definition,
        # not whatever the process that created the run had configured.
        policy = engine.retry_policy(step) if isinstance(step, BaseMachineStep) else None
        common: dict[str, Any] = {"error": message, "traceback": trace, "changes": changes or {}}
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
            common["changes"] = {**common["changes"], **(hook_changes or {})}
            if not runs.update(
                status=StepRunStatus.FAILED, lease_token=None, finished_at=Now(), **common
            ):
                return
            tx.leave(run.step_name)
            status = "failed"
        if status == "failed":
            boundary.failed(tx, run, message, trace, error=exc, hook_changes=hook_changes)
        else:
            tx.attempt_ended(run, status, message, trace)
        # In the worker's log too, not only on the instance (once committed).
        log = logger.error if status == "failed" else logger.warning
        transaction.on_commit(
            lambda: log(
                "step %r of instance %s %s (attempt %s): %s",
                run.step_name,
                run.instance_id,
                "failed" if status == "failed" else "raised; it will be retried",
                run.attempt,
                message,
            )
        )

    return transition.run(engine, run.instance_id, body, needs_definition=None)[1]


def safe_changes(ctx: WorkflowContext) -> dict[str, Any]:
    try:
        return ctx.changes
    except ContextError:
        return {}


def call_step(step: BaseStep, ctx: WorkflowContext, timeout: float | None) -> Any:
    """Run ``step.execute(ctx)``, sync or async, within ``timeout`` seconds if given;
    returns what it returned."""
    execute = step.execute  # type: ignore[attr-defined]
    if inspect.iscoroutinefunction(execute):

        async def run() -> Any:
            if timeout is None:
                return await execute(ctx)
            return await asyncio.wait_for(execute(ctx), timeout)

        return async_to_sync(run)()
    if timeout is None:
        return execute(ctx)
    # A sync step cannot be interrupted: run it in a thread and stop waiting for it.
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = execute(ctx)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(  # in the caller's context: its span is the step's parent
        target=contextvars.copy_context().run,
        args=(target,),
        name=f"workflow-step-{ctx.step_name}",
        daemon=True,
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"step {ctx.step_name!r} did not finish within {timeout} seconds")
    if outcome.get("error") is not None:
        raise outcome["error"]
    return outcome.get("result")
