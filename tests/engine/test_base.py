"""The engine against every example of the reference engine's documentation, and more."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from django_workflows import (
    ContextError,
    InstanceNotFound,
    StateConflict,
    StepNotFound,
    TaskNotOpen,
    WorkflowNotFound,
    WorkflowStatus,
)
from django_workflows.models import HumanTask, StepRun, WorkflowEvent

from .. import workflows
from ..workflows import calls

pytestmark = pytest.mark.django_db


def run_statuses(instance):
    return [(r.step_name, r.status) for r in instance.step_runs.order_by("id")]


# -- parallel execution ---------------------------------------------------------


def test_parallel_notifications_run_all_three_then_complete_once(engine):
    instance = engine.start_workflow("notifications", initial_data={"tag": "n"})

    assert instance.status == WorkflowStatus.COMPLETED
    steps = [step for _, step in calls]
    assert steps[0] == "start"
    assert sorted(steps[1:4]) == ["notify_email", "notify_slack", "notify_sms"]
    assert steps[4:] == ["complete"]
    assert instance.context["notify_slack_done"] is True  # the async step ran
    assert instance.current_step is None


def test_join_waits_for_every_branch(engine, wf_registry):
    # Run only the first branch: the join must not start before the others complete.
    instance = engine.start_workflow("notifications")
    runs = instance.step_runs.filter(step_name="complete")
    assert runs.count() == 1
    first_branch_end = max(
        instance.step_runs.filter(step_name__startswith="notify").values_list(
            "finished_at", flat=True
        )
    )
    assert runs.get().started_at >= first_branch_end


# -- conditional execution -------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "taken", "skipped"), [(85, "approve", "reject"), (70, "reject", "approve")]
)
def test_conditional_review(engine, score, taken, skipped):
    instance = engine.start_workflow("review", initial_data={"score": score})

    assert instance.status == WorkflowStatus.COMPLETED
    executed = [step for _, step in calls]
    assert executed == ["review", taken, "notify"]  # the join after the split did not wait
    assert skipped not in {r.step_name for r in instance.step_runs.all()}
    assert instance.context[f"{taken}_done"] is True


def test_condition_error_fails_the_instance_and_keeps_context(engine):
    instance = engine.start_workflow("review", initial_data={"score": None})

    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "review"
    assert "score" in instance.error or "None" in instance.error
    assert instance.context == {"score": None}


def test_exclusive_gateway_takes_first_match_or_default_and_parallel_gateway_joins(engine):
    light = engine.start_workflow("gateways", initial_data={"weight": 0.5})
    heavy = engine.start_workflow("gateways", initial_data={"weight": 50})

    assert light.status == heavy.status == WorkflowStatus.COMPLETED
    light_steps = {r.step_name for r in light.step_runs.all()}
    heavy_steps = {r.step_name for r in heavy.step_runs.all()}
    # weight 0.5 matches both "express" and "priority": the first edge wins.
    assert "express" in light_steps and "priority" not in light_steps
    assert "standard" in heavy_steps and not {"express", "priority"} & heavy_steps
    for instance in (light, heavy):
        assert instance.step_runs.filter(step_name="ship").count() == 1


# -- human tasks -----------------------------------------------------------------


def test_human_approval_pauses_waiting_and_resumes(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})
    workflows.FAIL_SWITCH["on"] = False

    assert instance.status == WorkflowStatus.WAITING
    assert instance.current_step == "manager_approval"
    task = HumanTask.objects.get(instance=instance)
    assert task.status == "open"
    assert task.title == "Approve the expense"
    assert list(task.candidate_groups.values_list("name", flat=True)) == ["managers"]

    instance = engine.complete_human_task(
        instance_id=instance.id,
        step_name="manager_approval",
        user_id=manager.pk,
        data={"approved": True, "comments": "Approved for Q4 budget"},
    )

    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["approved"] is True
    assert instance.context["comments"] == "Approved for Q4 budget"
    assert instance.context["payment"] == "ok"
    task.refresh_from_db()
    assert (task.status, task.completed_by, task.result["approved"]) == ("completed", manager, True)


def test_rejection_takes_the_other_edge(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})
    instance = engine.complete_human_task(
        instance.id, "manager_approval", manager, {"approved": False}
    )

    assert instance.status == WorkflowStatus.COMPLETED
    assert [s for _, s in calls] == ["submit", "reject"]


def test_completing_a_task_twice_is_a_conflict_and_changes_nothing(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})
    engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": False})
    events_before = WorkflowEvent.objects.filter(instance=instance).count()

    with pytest.raises(TaskNotOpen, match="no open human task"):
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": True})

    instance = engine.get_instance(instance.id)
    assert instance.context["approved"] is False
    assert WorkflowEvent.objects.filter(instance=instance).count() == events_before


def test_invalid_task_data_is_refused_and_changes_nothing(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})

    with pytest.raises(ValidationError) as excinfo:
        engine.complete_human_task(
            instance.id, "manager_approval", manager.pk, {"amount_approved": -1}
        )

    assert "amount_approved" in excinfo.value.message_dict
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.WAITING
    assert HumanTask.objects.get(instance=instance).status == "open"


def test_complete_task_by_id_and_unknown_ids(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 1})
    task = HumanTask.objects.get(instance=instance)
    instance = engine.complete_task(task.pk, manager.pk, {"approved": False})
    assert instance.status == WorkflowStatus.COMPLETED

    with pytest.raises(StepNotFound):
        engine.complete_human_task(instance.id, "no_such_step", manager.pk, {})
    with pytest.raises(InstanceNotFound):
        engine.complete_human_task("not-a-uuid", "manager_approval", manager.pk, {})
    with pytest.raises(ValueError, match="no user"):
        engine.complete_task(task.pk, 987654, {})


def test_rework_loop_reopens_the_review(engine, manager):
    instance = engine.start_workflow("rework")
    instance = engine.complete_human_task(instance.id, "review", manager.pk, {"approved": False})
    assert instance.status == WorkflowStatus.WAITING
    assert instance.current_step == "review"
    instance = engine.complete_human_task(instance.id, "review", manager.pk, {"approved": True})

    assert instance.status == WorkflowStatus.COMPLETED
    assert [s for _, s in calls] == ["draft", "draft", "publish"]
    assert HumanTask.objects.filter(instance=instance, status="completed").count() == 2


# -- cancellation ----------------------------------------------------------------


def test_cancel_a_waiting_workflow(engine):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})
    instance = engine.cancel_workflow(
        instance_id=instance.id, reason="Customer requested cancellation"
    )

    assert instance.status == WorkflowStatus.CANCELED
    assert HumanTask.objects.get(instance=instance).status == "canceled"
    assert not instance.step_runs.filter(status__in=["queued", "running", "waiting"]).exists()
    assert instance.events.last().payload["reason"] == "Customer requested cancellation"
    with pytest.raises(StateConflict, match="already canceled"):
        engine.cancel_workflow(instance.id)
    with pytest.raises(TaskNotOpen):
        engine.complete_human_task(instance.id, "manager_approval", None, {"approved": True})


def test_cancel_a_completed_workflow_is_a_conflict(engine):
    instance = engine.start_workflow("notifications")
    with pytest.raises(StateConflict, match="already completed"):
        engine.cancel_workflow(instance.id, reason="too late")
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


# -- failure and retry -----------------------------------------------------------


def test_failing_step_keeps_context_at_failure_and_retry_resumes(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 500})
    instance = engine.complete_human_task(
        instance.id, "manager_approval", manager.pk, {"approved": True}
    )

    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "process_payment"
    assert instance.error == "RuntimeError: payment service down (attempt 1)"
    assert "Traceback" in instance.error_traceback
    # The context at failure: what was there before the step; the step's writes are not merged.
    assert instance.context == {
        "amount": 500,
        "submit_done": True,
        "approved": True,
        "comments": "",
        "amount_approved": None,
    }
    failed_run = instance.step_runs.get(step_name="process_payment")
    assert failed_run.status == "failed"
    assert failed_run.changes == {"partial": "written before the failure"}
    assert failed_run.input == instance.context

    workflows.FAIL_SWITCH["on"] = False
    instance = engine.retry(instance_id=instance.id, from_step="process_payment")

    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["payment"] == "ok"
    assert instance.error == ""
    assert [r.status for r in instance.step_runs.filter(step_name="process_payment")] == [
        "failed",
        "completed",
    ]


def test_retry_defaults_to_the_failed_step(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 5})
    instance = engine.complete_human_task(
        instance.id, "manager_approval", manager.pk, {"approved": True}
    )
    workflows.FAIL_SWITCH["on"] = False
    instance = engine.retry(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert [s for _, s in calls] == ["submit", "process_payment", "process_payment"]


def test_retry_from_an_earlier_step(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 5})
    instance = engine.complete_human_task(
        instance.id, "manager_approval", manager.pk, {"approved": True}
    )
    instance = engine.retry(instance.id, from_step="manager_approval")
    assert instance.status == WorkflowStatus.WAITING
    assert HumanTask.objects.filter(instance=instance, status="open").count() == 1


def test_retry_conflicts_and_unknown_step(engine, manager):
    instance = engine.start_workflow("notifications")
    with pytest.raises(StateConflict, match="only a failed instance"):
        engine.retry(instance.id)
    failed = engine.start_workflow("expense", initial_data={"amount": 5})
    failed = engine.complete_human_task(
        failed.id, "manager_approval", manager.pk, {"approved": True}
    )
    with pytest.raises(StepNotFound):
        engine.retry(failed.id, from_step="nope")
    assert engine.get_instance(failed.id).status == WorkflowStatus.FAILED


def test_retry_policy_retries_then_succeeds(engine, wf_registry):
    wf_registry.register_definition(workflows.retrying(max_attempts=3, succeed_on=3))
    instance = engine.start_workflow("retrying", version="3.3.0")

    assert instance.status == WorkflowStatus.COMPLETED
    run = instance.step_runs.get(step_name="process_payment")
    assert (run.status, run.attempt) == ("completed", 3)
    statuses = list(
        instance.events.filter(type="StepExecuted", step_name="process_payment").values_list(
            "payload__status", flat=True
        )
    )
    assert statuses == ["retrying", "retrying", "completed"]


def test_retry_policy_exhausted_fails_with_error_and_traceback(engine, wf_registry):
    wf_registry.register_definition(workflows.retrying(max_attempts=2, succeed_on=None))
    instance = engine.start_workflow("retrying", version="2.0.0")

    assert instance.status == WorkflowStatus.FAILED
    run = instance.step_runs.get(step_name="process_payment")
    assert (run.status, run.attempt) == ("failed", 2)
    assert "attempt 2" in run.error and "RuntimeError" in run.traceback


def test_retry_with_backoff_waits_for_run_due_timers(engine, wf_registry):
    wf_registry.register_definition(workflows.retrying(max_attempts=2, succeed_on=2, backoff=60))
    instance = engine.start_workflow("retrying", version="2.2.60")

    assert instance.status == WorkflowStatus.RUNNING
    run = instance.step_runs.get(step_name="process_payment")
    assert run.status == "queued" and run.due_at > timezone.now() + timedelta(seconds=50)
    assert engine.run_due_timers() == 0  # not due yet

    StepRun.objects.filter(pk=run.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert engine.run_due_timers() == 1
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


def test_step_timeout_fails_the_step(engine, wf_registry):
    import time

    from django_workflows import BaseMachineStep, WorkflowDefinition

    class Slow(BaseMachineStep):
        timeout = 0.2

        def execute(self, context):
            time.sleep(2)

    class SlowAsync(BaseMachineStep):
        timeout = 0.2

        async def execute(self, context):
            import asyncio

            await asyncio.sleep(2)

    for name, step in (("slow", Slow()), ("slow_async", SlowAsync())):
        wf_registry.register_definition(
            WorkflowDefinition(name=name, version="1", initial_step="s", steps={"s": step})
        )
        instance = engine.start_workflow(name)
        assert instance.status == WorkflowStatus.FAILED
        assert "TimeoutError" in instance.error


# -- timers ------------------------------------------------------------------------


def test_timer_waits_then_fires_once(engine):
    instance = engine.start_workflow("timer")
    assert instance.status == WorkflowStatus.WAITING
    assert instance.current_step == "wait"
    run = instance.step_runs.get(step_name="wait")
    assert run.status == "scheduled"
    assert timedelta(minutes=59) < run.due_at - timezone.now() <= timedelta(hours=1)

    assert engine.run_due_timers() == 0
    StepRun.objects.filter(pk=run.pk).update(due_at=timezone.now() - timedelta(seconds=1))
    assert engine.run_due_timers() == 1
    assert engine.run_due_timers() == 0
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert [s for _, s in calls] == ["start", "after"]


def test_timer_due_time_from_context(engine, wf_registry):
    from datetime import datetime

    from django_workflows import Edge, TimerStep, WorkflowDefinition

    class UntilDeadline(TimerStep):
        def get_due_at(self, context):
            return datetime.fromisoformat(context.get("deadline"))

    wf_registry.register_definition(
        WorkflowDefinition(
            name="deadline",
            version="1",
            initial_step="wait",
            steps={"wait": UntilDeadline(), "after": workflows.Record()},
            edges=[Edge("wait", "after")],
        )
    )
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    instance = engine.start_workflow("deadline", initial_data={"deadline": past})
    assert instance.status == WorkflowStatus.WAITING
    assert engine.run_due_timers() == 1
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


# -- versions, context, errors ---------------------------------------------------


def test_versions(engine, wf_registry):
    wf_registry.register_definition(workflows.expense_approval(version="2.0.0"))
    assert wf_registry.get_definition("expense").version == "2.0.0"
    assert wf_registry.get_definition("expense", version="1.0.0").version == "1.0.0"

    old = engine.start_workflow("expense", version="1.0.0", initial_data={"amount": 1})
    new = engine.start_workflow("expense", initial_data={"amount": 1})
    assert (old.definition.version, new.definition.version) == ("1.0.0", "2.0.0")
    with pytest.raises(WorkflowNotFound, match=r"no version '3\.0\.0'"):
        engine.start_workflow("expense", version="3.0.0")


def test_unknown_workflow_and_bad_initial_data_create_nothing(engine):
    with pytest.raises(WorkflowNotFound, match="no workflow named 'nope'"):
        engine.start_workflow("nope")
    with pytest.raises(ContextError, match="not JSON-serializable"):
        engine.start_workflow("notifications", initial_data={"when": timezone.now()})
    assert not StepRun.objects.exists()


def test_step_writing_a_non_json_value_fails_clearly(engine, wf_registry):
    from django_workflows import BaseMachineStep, WorkflowDefinition

    class Bad(BaseMachineStep):
        def execute(self, context):
            context.set("when", object())

    wf_registry.register_definition(
        WorkflowDefinition(name="bad", version="1", initial_step="s", steps={"s": Bad()})
    )
    instance = engine.start_workflow("bad", initial_data={"keep": 1})
    assert instance.status == WorkflowStatus.FAILED
    assert "not JSON-serializable" in instance.error
    assert instance.context == {"keep": 1}


def test_context_exposes_read_only_run_facts(engine, wf_registry, user):
    from django_workflows import BaseMachineStep, WorkflowDefinition

    seen = {}

    class Inspect(BaseMachineStep):
        def execute(self, context):
            seen.update(
                instance_id=context.instance_id,
                step_name=context.step_name,
                attempt=context.attempt,
                user_id=context.user_id,
            )
            with pytest.raises(AttributeError):
                context.attempt = 5

    wf_registry.register_definition(
        WorkflowDefinition(name="inspect", version="1", initial_step="s", steps={"s": Inspect()})
    )
    instance = engine.start_workflow("inspect", started_by=user)
    assert seen == {"instance_id": instance.id, "step_name": "s", "attempt": 1, "user_id": user.pk}


def test_unregistered_definition_fails_clearly(engine, wf_registry, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 1})
    wf_registry.unregister("expense")
    with pytest.raises(WorkflowNotFound, match="no workflow named 'expense'"):
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": True})
    assert engine.get_instance(instance.id).status == WorkflowStatus.WAITING


def test_get_instance_unknown(engine):
    with pytest.raises(InstanceNotFound):
        engine.get_instance("00000000-0000-0000-0000-000000000000")
    with pytest.raises(InstanceNotFound):
        engine.get_instance("garbage")


# -- async twins ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_async_twins(wf_registry, bus):
    from asgiref.sync import sync_to_async
    from django.db import connections

    from django_workflows import LocalExecutionEngine

    from ..factories import GroupFactory, UserFactory

    engine = LocalExecutionEngine(wf_registry, event_bus=bus)
    manager = await sync_to_async(UserFactory)(
        groups=[await sync_to_async(GroupFactory)(name="managers")]
    )
    instance = await engine.astart_workflow("notifications")
    assert instance.status == WorkflowStatus.COMPLETED

    instance = await engine.astart_workflow("expense", initial_data={"amount": 3})
    assert instance.status == WorkflowStatus.WAITING
    instance = await engine.acomplete_human_task(
        instance.id, "manager_approval", manager.pk, {"approved": True}
    )
    assert instance.status == WorkflowStatus.FAILED
    workflows.FAIL_SWITCH["on"] = False
    instance = await engine.aretry(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    other = await engine.astart_workflow("expense", initial_data={"amount": 3})
    other = await engine.acancel_workflow(other.id, reason="x")
    assert other.status == WorkflowStatus.CANCELED
    assert (await engine.aget_instance(other.id)).status == WorkflowStatus.CANCELED
    assert "WorkflowCompleted" in [e.type for e in bus.events]
    # sync_to_async's worker thread holds its own (persistent) connection.
    await sync_to_async(connections.close_all)()


# -- failures in routing and hooks ---------------------------------------------------


def test_routing_failure_records_a_failed_step_not_a_completed_one(engine):
    instance = engine.start_workflow("review", initial_data={"score": None})
    history = list(instance.events.values_list("type", "step_name", "payload__status"))
    assert history == [
        ("WorkflowStarted", "", None),
        ("StepExecuted", "review", "failed"),
        ("WorkflowFailed", "review", None),
    ]
    assert instance.step_runs.get(step_name="review").status == "failed"


def test_a_raising_hook_of_the_next_step_fails_the_instance_cleanly(engine, wf_registry):
    from django_workflows import BaseHumanStep, Edge, WorkflowDefinition

    class BadAssignee(BaseHumanStep):
        def get_assignee(self, context):
            raise LookupError("no manager for this department")

    wf_registry.register_definition(
        WorkflowDefinition(
            name="hook",
            version="1",
            initial_step="start",
            steps={"start": workflows.Record(), "approve": BadAssignee()},
            edges=[Edge("start", "approve")],
        )
    )
    instance = engine.start_workflow("hook", initial_data={"x": 1})

    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "start"
    assert "LookupError: no manager" in instance.error
    assert instance.context == {"x": 1}  # the step's changes were not merged
    assert not HumanTask.objects.filter(instance=instance).exists()
    assert not instance.step_runs.filter(status__in=["queued", "running", "waiting"]).exists()


def test_timers_of_a_failed_instance_wait_for_its_retry(engine, wf_registry, manager):
    from django_workflows import Edge, TimerStep, WorkflowDefinition

    wf_registry.register_definition(
        WorkflowDefinition(
            name="timer_and_failure",
            version="1",
            initial_step="start",
            steps={
                "start": workflows.Record(),
                "wait": TimerStep(timedelta(minutes=5)),
                "boom": workflows.Fail(),
                "end": workflows.Record(),
            },
            edges=[
                Edge("start", "wait"),
                Edge("start", "boom"),
                Edge("wait", "end"),
                Edge("boom", "end"),
            ],
        )
    )
    instance = engine.start_workflow("timer_and_failure")
    assert instance.status == WorkflowStatus.FAILED
    StepRun.objects.filter(instance=instance, step_name="wait").update(
        due_at=timezone.now() - timedelta(seconds=1)
    )
    assert engine.run_due_timers() == 0
    assert instance.step_runs.get(step_name="wait").status == "scheduled"

    workflows.FAIL_SWITCH["on"] = False
    instance = engine.retry(instance.id)
    assert instance.status == WorkflowStatus.WAITING  # "end" waits for the timer's token
    assert engine.run_due_timers() == 1
    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.step_runs.filter(step_name="end").count() == 1


def test_form_values_that_are_not_json_are_stored_as_text(engine, wf_registry, manager):
    from django import forms

    from django_workflows import BaseHumanStep, WorkflowDefinition

    class DateForm(forms.Form):
        pay_on = forms.DateField()
        amount = forms.DecimalField()

    class Schedule(BaseHumanStep):
        form_class = DateForm

    wf_registry.register_definition(
        WorkflowDefinition(name="dated", version="1", initial_step="s", steps={"s": Schedule()})
    )
    instance = engine.start_workflow("dated")
    instance = engine.complete_human_task(
        instance.id, "s", manager.pk, {"pay_on": "2026-12-01", "amount": "12.50"}
    )
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"pay_on": "2026-12-01", "amount": "12.50"}


def test_cancel_works_when_the_definition_is_no_longer_registered(engine, wf_registry):
    instance = engine.start_workflow("expense", initial_data={"amount": 1})
    wf_registry.unregister("expense")
    instance = engine.cancel_workflow(instance.id, reason="workflow retired")
    assert instance.status == WorkflowStatus.CANCELED


def test_inside_the_callers_transaction_steps_run_after_commit(
    engine, django_capture_on_commit_callbacks
):
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        instance = engine.start_workflow("notifications")
        # Nothing ran yet: execute() never runs inside the caller's transaction.
        assert instance.status == WorkflowStatus.RUNNING
        assert calls == []
    assert calls[0][1] == "start"
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED


def test_a_rolled_back_start_runs_no_step(engine):
    from django.db import transaction

    from django_workflows.models import WorkflowInstance

    def view():
        with transaction.atomic():
            engine.start_workflow("notifications")
            raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        view()
    assert calls == []
    assert not WorkflowInstance.objects.exists()


def test_context_size_limit(engine, wf_registry, manager, settings):
    from django_workflows import BaseMachineStep, WorkflowDefinition

    settings.DJANGO_WORKFLOWS = {"MAX_CONTEXT_BYTES": 2000}

    class Grow(BaseMachineStep):
        def execute(self, context):
            context.set("blob", "x" * 3000)

    wf_registry.register_definition(
        WorkflowDefinition(name="grow", version="1", initial_step="s", steps={"s": Grow()})
    )
    with pytest.raises(ContextError, match="limit is 2,000"):
        engine.start_workflow("notifications", initial_data={"blob": "x" * 3000})
    assert not StepRun.objects.exists()

    instance = engine.start_workflow("grow", initial_data={"small": 1})
    assert instance.status == WorkflowStatus.FAILED
    assert "MAX_CONTEXT_BYTES" in instance.error
    assert instance.context == {"small": 1}

    waiting = engine.start_workflow("expense", initial_data={"amount": 1})
    with pytest.raises(ContextError):
        engine.complete_human_task(
            waiting.id, "manager_approval", manager, {"comments": "y" * 3000}
        )
    assert HumanTask.objects.get(instance=waiting).status == "open"
