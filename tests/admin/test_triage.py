"""The admin shows a task's summary in the lists and its display fields above the form."""

import pytest
from django.urls import reverse

from django_workflows import BaseHumanStep, WorkflowDefinition

pytestmark = pytest.mark.django_db


@pytest.fixture
def task(admin_engine, managers):
    admin_engine.registry.register_definition(
        WorkflowDefinition(
            name="triaged",
            version="1",
            initial_step="approve",
            steps={
                "approve": BaseHumanStep(
                    title="Approve the expense",
                    candidate_groups=("managers",),
                    actions={"Approve": {"approved": True}},
                    fields=(),
                    summary="{employee}: {amount} EUR",
                    display_fields={"amount": "Amount", "employee": "Requested by"},
                )
            },
        )
    )
    instance = admin_engine.start_workflow(
        "triaged", initial_data={"employee": "<b>Ada</b>", "amount": 120}
    )
    return instance.human_tasks.get()


def test_the_inbox_and_the_task_list_show_the_summary(client, task, approver):
    client.force_login(approver)
    inbox = client.get(reverse("admin:django_workflows_humantask_inbox")).content.decode()
    assert '<td class="dwf-summary">&lt;b&gt;Ada&lt;/b&gt;: 120 EUR</td>' in inbox
    listing = client.get(reverse("admin:django_workflows_humantask_changelist")).content.decode()
    assert "&lt;b&gt;Ada&lt;/b&gt;: 120 EUR" in listing


def test_the_task_page_shows_the_display_fields_above_the_form(client, task, approver):
    client.force_login(approver)
    url = reverse("admin:django_workflows_humantask_complete", args=[task.pk])
    html = client.get(url).content.decode()
    facts = html.index('id="dwf-task-facts"')
    assert facts < html.index('id="dwf-complete-form"') < html.index('id="dwf-task-raw"')
    assert '<tr><th scope="row">Amount</th><td>120</td></tr>' in html
    assert '<tr><th scope="row">Requested by</th><td>&lt;b&gt;Ada&lt;/b&gt;</td></tr>' in html
    assert '<details id="dwf-task-raw">' in html  # the raw context, collapsed
