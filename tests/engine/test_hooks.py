"""Step hooks: on_success after execute() succeeds, on_failure once the step failed for
good; their context changes committed with the step's outcome."""

import pytest

from django_workflows import (
    BaseMachineStep,
    LocalExecutionEngine,
    RetryPolicy,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.models import StepRun
from django_workflows.testing import InProcessWorker

pytestmark = pytest.mark.django_db

calls: list[str] = []


@pytest.fixture(autouse=True)
def _calls():
    calls.clear()


class Charge(BaseMachineStep):
    retry = RetryPolicy(max_attempts=2, backoff=0)

    def execute(self, context):
        calls.append(f"execute {context.attempt}")
        if context.get("fail_until", 0) >= context.attempt:
            raise RuntimeError(f"declined {context.attempt}")
        context.set("charged", True)
        return "ch_1"

    def on_success(self, context, result):
        calls.append(f"on_success {result}")
        context.set("receipt", result)
        if context.get("success_hook_fails"):
            raise ValueError("receipt printer jammed")

    def on_failure(self, context, error):
        calls.append(f"on_failure {error}")
        context.set("refund_note", str(error))
        if context.get("failure_hook_fails"):
            raise KeyError("no refund desk")


class AsyncCharge(BaseMachineStep):
    async def execute(self, context):
        if context.get("fail"):
            raise RuntimeError("async declined")
        return 7

    async def on_success(self, context, result):
        context.set("doubled", result * 2)

    async def on_failure(self, context, error):
        context.set("failed_with", type(error).__name__)


def registry():
    reg = WorkflowRegistry()
    reg.register_definition(
        WorkflowDefinition(
            name="hooks",
            version="1",
            initial_step="charge",
            steps={"charge": Charge()},
        )
    )
    reg.register_definition(
        WorkflowDefinition(
            name="async_hooks", version="1", initial_step="charge", steps={"charge": AsyncCharge()}
        )
    )
    return reg


@pytest.fixture(params=["local", "worker"])
def engine(request):
    if request.param == "local":
        return LocalExecutionEngine(registry())
    return InProcessWorker(registry())


def run(engine, name, **data):
    instance = engine.start_workflow(name, initial_data=data)
    if isinstance(engine, InProcessWorker):
        engine.run()
    return engine.get_instance(instance.id)


def test_on_success_changes_are_committed_with_the_step(engine):
    instance = run(engine, "hooks")
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"charged": True, "receipt": "ch_1"}
    assert calls == ["execute 1", "on_success ch_1"]
    assert StepRun.objects.get(instance=instance).changes == {"charged": True, "receipt": "ch_1"}
    # StepExecuted comes after the hook, with the hook's changes.
    event = instance.events.get(type="StepExecuted")
    assert event.payload["changes"] == {"charged": True, "receipt": "ch_1"}


def test_on_failure_runs_once_after_the_retries(engine):
    instance = run(engine, "hooks", fail_until=5)
    assert instance.status == WorkflowStatus.FAILED
    assert calls == ["execute 1", "execute 2", "on_failure declined 2"]
    # Kept in the instance's context at failure; the step's own error stays.
    assert instance.context["refund_note"] == "declined 2"
    assert instance.error == "RuntimeError: declined 2"
    statuses = list(
        instance.events.filter(type="StepExecuted").values_list("payload__status", flat=True)
    )
    assert statuses == ["retrying", "failed"]


def test_no_on_failure_when_a_retry_succeeds(engine):
    instance = run(engine, "hooks", fail_until=1)
    assert instance.status == WorkflowStatus.COMPLETED
    assert calls == ["execute 1", "execute 2", "on_success ch_1"]
    assert "refund_note" not in instance.context


def test_on_success_raising_fails_the_attempt_and_the_policy_applies(engine):
    instance = run(engine, "hooks", success_hook_fails=True)
    assert instance.status == WorkflowStatus.FAILED
    assert calls == [
        "execute 1",
        "on_success ch_1",
        "execute 2",
        "on_success ch_1",
        "on_failure receipt printer jammed",
    ]
    assert instance.error == "ValueError: receipt printer jammed"
    # Nothing of the failed attempt's changes reached the context; on_failure's did.
    assert "receipt" not in instance.context
    assert instance.context["refund_note"] == "receipt printer jammed"


def test_on_failure_raising_is_logged_and_the_error_kept(engine, caplog):
    instance = run(engine, "hooks", fail_until=5, failure_hook_fails=True)
    assert instance.status == WorkflowStatus.FAILED
    assert instance.error == "RuntimeError: declined 2"
    assert "refund_note" not in instance.context  # its changes are dropped
    assert any("on_failure of step 'charge'" in r.getMessage() for r in caplog.records)


def test_async_hooks(engine):
    instance = run(engine, "async_hooks")
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context == {"doubled": 14}

    instance = run(engine, "async_hooks", fail=True)
    assert instance.status == WorkflowStatus.FAILED
    assert instance.context["failed_with"] == "RuntimeError"
