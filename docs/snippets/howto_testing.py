# expenses/tests/test_workflows.py
import pytest

from django_workflows import (
    InMemoryEventBus,
    LocalExecutionEngine,
    WorkflowCompleted,
    WorkflowRegistry,
)
from expenses.workflows import expense_claim


@pytest.fixture
def engine():
    # A registry and an engine per test: nothing leaks between tests.
    registry = WorkflowRegistry()
    registry.register_definition(expense_claim)
    return LocalExecutionEngine(registry, event_bus=InMemoryEventBus())


@pytest.mark.django_db
def test_an_approved_claim_is_paid(engine, admin_user, django_capture_on_commit_callbacks):
    # Events are delivered on commit: run the callbacks of the test's transaction.
    with django_capture_on_commit_callbacks(execute=True):
        instance = engine.start_workflow("expense_claim", initial_data={"amount": 120})
        assert instance.status == "waiting"
        instance = engine.complete_human_task(
            instance.id, "approval", user_id=admin_user, action="Approve"
        )
    assert instance.status == "completed"
    assert instance.context["paid"] == 120
    assert type(engine.event_bus.events[-1]) is WorkflowCompleted


@pytest.mark.django_db
def test_a_rejected_claim_is_not_paid(engine, admin_user):
    instance = engine.start_workflow("expense_claim", initial_data={"amount": 120})
    instance = engine.complete_human_task(
        instance.id, "approval", user_id=admin_user, action="Reject"
    )
    assert instance.context["paid"] == 0
    assert [run.step_name for run in instance.step_runs.order_by("id")] == [
        "submit",
        "approval",
        "reject",
    ]
