"""Definitions: the registered workflows merged with the versions stored in the database."""

import pytest

from django_workflows.models import DefinitionVersion

from .. import workflows
from .conftest import API

pytestmark = pytest.mark.django_db


def by_name(response):
    assert response.status_code == 200, response.json()
    return {item["name"]: item for item in response.json()}


def test_lists_every_registered_workflow_with_its_graph(client_for, starter, wf_registry):
    found = by_name(client_for(starter).get(f"{API}/definitions/"))

    assert set(found) == {d.name for d in wf_registry.list_definitions()}
    approval = found["approval"]
    assert approval["description"] == "A decision by one person."
    assert approval["latest_version"] == "1.0.0"
    assert approval["registered"] is True
    assert approval["versions"] == [
        {
            "version": "1.0.0",
            "registered": True,
            "stored": False,
            "description": "A decision by one person.",
        }
    ]
    assert approval["graph"] == wf_registry.get_definition("approval").graph()


def test_versions_merge_registered_and_stored_in_natural_order(
    client_for, starter, wf_registry, expense
):
    wf_registry.register_definition(workflows.expense_approval("1.10.0"))
    wf_registry.register_definition(workflows.expense_approval("1.9.0"))
    DefinitionVersion.objects.create(
        name="expense", version="0.1", graph={"old": True}, checksum="x"
    )

    expense_def = by_name(client_for(starter).get(f"{API}/definitions/"))["expense"]

    assert [(v["version"], v["registered"], v["stored"]) for v in expense_def["versions"]] == [
        ("0.1", False, True),
        ("1.0.0", True, True),
        ("1.9.0", True, False),
        ("1.10.0", True, False),
    ]
    assert expense_def["latest_version"] == "1.10.0"
    assert expense_def["graph"]["version"] == "1.10.0"


def test_a_workflow_only_stored_is_listed_as_not_registered(client_for, starter):
    DefinitionVersion.objects.create(
        name="retired", version="2", description="Gone.", graph={"steps": {}}, checksum="x"
    )

    retired = by_name(client_for(starter).get(f"{API}/definitions/"))["retired"]

    assert retired["registered"] is False
    assert retired["latest_version"] == "2"
    assert retired["graph"] == {"steps": {}}
    assert retired["description"] == "Gone."


def test_detail_has_the_graph_of_each_version(client_for, starter, wf_registry):
    wf_registry.register_definition(workflows.expense_approval("2.0.0"))

    response = client_for(starter).get(f"{API}/definitions/expense/")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "expense"
    assert [v["graph"]["version"] for v in body["versions"]] == ["1.0.0", "2.0.0"]
    assert body["graph"]["steps"]["manager_approval"]["candidate_groups"] == ["managers"]


def test_detail_of_a_name_with_dots_and_unknown_names(client_for, starter, wf_registry):
    wf_registry.register_definition(
        workflows.WorkflowDefinition(
            name="billing.v2",
            version="1",
            initial_step="a",
            steps={"a": workflows.Record()},
            edges=[],
        )
    )
    client = client_for(starter)

    assert client.get(f"{API}/definitions/billing.v2/").json()["name"] == "billing.v2"
    assert client.get(f"{API}/definitions/billing/").status_code == 404
    assert client.get(f"{API}/definitions/%00/").status_code == 404
