"""The definitions admin: stored versions, their graph, their instances by status."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_workflows.models import DefinitionVersion

from . import workflows

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:django_workflows_definitionversion_changelist")
INSTANCES = reverse("admin:django_workflows_workflowinstance_changelist")


def test_list_counts_instances_by_status(admin_client, start, admin_engine):
    for amount in (1, 2):
        start("approval", amount=amount)  # waiting
    workflows.PAYMENT_DOWN["on"] = True
    start("payment", amount=3)  # failed
    workflows.PAYMENT_DOWN["on"] = False
    start("payment", amount=4)  # completed
    start("payment", amount=5)
    approval = DefinitionVersion.objects.get(name="approval")
    payment = DefinitionVersion.objects.get(name="payment")

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert rows["approval"].instance_count == 2
    assert rows["approval"].instances_waiting == 2
    assert rows["payment"].instance_count == 3
    assert (rows["payment"].instances_completed, rows["payment"].instances_failed) == (2, 1)
    assert rows["payment"].instances_waiting == 0
    html = response.content.decode()
    link = f'<a href="{INSTANCES}?definition__id__exact={payment.pk}&amp;status__exact=completed">'
    assert link + '<span class="dwf-badge dwf-badge-completed">Completed</span> 2</a>' in html
    assert f"{INSTANCES}?definition__id__exact={approval.pk}&amp;status__exact=waiting" in html
    assert 'class="dwf-thumbnail"' in html
    assert html.count('class="dwf-graph"') == 2


def _list_queries(client, start, n_definitions):
    names = ["approval", "check", "payment"][:n_definitions]
    for name in names:
        for _ in range(n_definitions):
            start(name, amount=1)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == n_definitions
    return len(queries)


def test_list_queries_do_not_grow_with_definitions_or_instances(admin_client, start):
    assert _list_queries(admin_client, start, 1) == _list_queries(admin_client, start, 3)


def test_detail_shows_the_graph_steps_and_edges(admin_client, start):
    start("approval", amount=1)
    row = DefinitionVersion.objects.get(name="approval")

    response = admin_client.get(
        reverse("admin:django_workflows_definitionversion_change", args=[row.pk])
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="dwf-graph"') == 1
    for step in ("submit", "approve", "pay", "reject"):
        assert f'data-step="{step}" data-state="pending"' in html
    assert "context.get(&#x27;approved&#x27;) == True" in html  # the edges table, escaped
    assert 'class="dwf-legend"' not in html  # no instance, no states to explain
    assert row.checksum in html
    assert "Submit, a manager approves, then pay or reject." in html


def test_definitions_are_read_only(admin_client, start):
    start("approval", amount=1)
    row = DefinitionVersion.objects.get(name="approval")
    graph = row.graph

    add = admin_client.get(reverse("admin:django_workflows_definitionversion_add"))
    change = admin_client.post(
        reverse("admin:django_workflows_definitionversion_change", args=[row.pk]),
        {"name": "hacked", "version": "9"},
    )
    delete = admin_client.get(
        reverse("admin:django_workflows_definitionversion_delete", args=[row.pk])
    )

    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    row.refresh_from_db()
    assert (row.name, row.graph) == ("approval", graph)


def test_view_permission_is_enough_to_see_definitions(client, accountant, start):
    start("check")
    client.force_login(accountant)

    assert client.get(CHANGELIST).status_code == 200
