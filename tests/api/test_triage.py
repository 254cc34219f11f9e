"""The task list's summary and the task detail's display fields, over the API."""

import pytest

from django_workflows import BaseHumanStep, WorkflowDefinition

from .conftest import API


@pytest.fixture
def triaged(api_engine, starter, managers):
    api_engine.registry.register_definition(
        WorkflowDefinition(
            name="triaged",
            version="1",
            initial_step="approve",
            steps={
                "approve": BaseHumanStep(
                    title="Approve",
                    candidate_groups=("managers",),
                    fields=(),
                    summary="{employee}: {amount} EUR",
                    display_fields={"amount": "Amount", "employee": "Requested by", "x": "X"},
                )
            },
        )
    )
    instance = api_engine.start_workflow(
        "triaged", initial_data={"employee": "Ada", "amount": 120}, started_by=starter
    )
    return instance.human_tasks.get()


@pytest.mark.django_db
def test_the_inbox_lists_the_summary_and_the_detail_the_display(client_for, manager, triaged):
    client = client_for(manager)
    (row,) = client.get(f"{API}/tasks/").json()["results"]
    assert row["summary"] == "Ada: 120 EUR"
    detail = client.get(f"{API}/tasks/{triaged.pk}/").json()
    assert detail["display"] == [
        {"key": "amount", "label": "Amount", "value": 120},
        {"key": "employee", "label": "Requested by", "value": "Ada"},
        {"key": "x", "label": "X", "value": None},
    ]
