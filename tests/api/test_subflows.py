"""The API shows a sub-workflow's parent and a parent's children."""

import pytest

from testproject.testapp import subflow_workflows as sw

INSTANCES = "/api/workflows/instances/"


@pytest.fixture(autouse=True)
def _subflows(wf_registry):
    sw.register(wf_registry)


def test_the_detail_links_parent_and_children(client_for, starter, api_engine):
    parent = api_engine.start_workflow(
        "sub_approval", initial_data={"lines": ["x", "y"]}, started_by=starter
    )
    first, second = parent.children.order_by("parent_item")
    client = client_for(starter)

    body = client.get(f"{INSTANCES}{parent.pk}/").json()
    assert body["parent"] is None
    assert body["children"] == [
        {
            "id": str(c.pk),
            "workflow": "sub_approve",
            "status": "waiting",
            "step_name": "approve_lines",
            "item": i,
        }
        for i, c in enumerate((first, second))
    ]
    assert [r["step_type"] for r in body["step_runs"]] == ["subworkflow"]

    child = client.get(f"{INSTANCES}{first.pk}/").json()
    assert child["parent"] == str(parent.pk)
    assert child["children"] == []

    listed = client.get(INSTANCES, {"parent": str(parent.pk)}).json()["results"]
    assert {row["id"] for row in listed} == {str(first.pk), str(second.pk)}
    assert client.get(INSTANCES, {"parent": str(first.pk)}).json()["results"] == []
    assert client.get(INSTANCES, {"parent": "nope"}).status_code == 400


def test_a_child_completed_through_the_api_moves_the_parent_on(client_for, starter, api_engine):
    parent = api_engine.start_workflow(
        "sub_single", initial_data={"the_line": {"qty": 3, "price": 2}}, started_by=starter
    )
    body = client_for(starter).get(f"{INSTANCES}{parent.pk}/").json()
    assert body["status"] == "completed"
    assert body["context"]["line_total"] == 6
    assert [c["status"] for c in body["children"]] == ["completed"]
    assert "SubWorkflowStarted" in [e["type"] for e in body["events"]]


def test_canceling_the_parent_through_the_api_cancels_its_children(
    client_for, starter, superuser, api_engine
):
    parent = api_engine.start_workflow(
        "sub_approval", initial_data={"lines": ["x"]}, started_by=starter
    )
    response = client_for(superuser).post(f"{INSTANCES}{parent.pk}/cancel/", {"reason": "no"})
    assert response.status_code == 200, response.content
    body = client_for(superuser).get(f"{INSTANCES}{parent.pk}/").json()
    assert [c["status"] for c in body["children"]] == ["canceled"]
