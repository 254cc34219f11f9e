"""What identifies a task at a glance: its summary, and the context values the task page
shows (``summary``, ``display_fields``)."""

import pytest

from django_workflows import BaseHumanStep, WorkflowDefinition
from django_workflows.models import HumanTask


def expense(**options):
    return WorkflowDefinition(
        name="triage",
        version="1",
        initial_step="approve",
        steps={"approve": BaseHumanStep(title="Approve", fields=(), **options)},
    )


@pytest.mark.django_db
def test_a_format_string_summary_reads_the_context_and_blanks_what_is_missing(engine):
    engine.registry.register_definition(expense(summary="{employee}: {amount} EUR {note}"))
    engine.start_workflow("triage", initial_data={"employee": "Ada", "amount": 120})
    assert HumanTask.objects.get().summary == "Ada: 120 EUR "


@pytest.mark.django_db
def test_a_callable_summary_and_the_length_bound(engine):
    engine.registry.register_definition(expense(summary=lambda ctx: "x" * 400))
    engine.start_workflow("triage")
    assert HumanTask.objects.get().summary == "x" * 300


@pytest.mark.django_db
def test_no_summary_is_blank(engine):
    engine.registry.register_definition(expense())
    engine.start_workflow("triage")
    assert HumanTask.objects.get().summary == ""


def test_display_fields_as_a_mapping_or_keys():
    labelled = BaseHumanStep(display_fields={"amount": "Amount (EUR)", "employee": "Requested by"})
    assert labelled.get_display_fields() == [
        ("amount", "Amount (EUR)"),
        ("employee", "Requested by"),
    ]
    assert BaseHumanStep(display_fields=["cost_center"]).get_display_fields() == [
        ("cost_center", "Cost center")
    ]
