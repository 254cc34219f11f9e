"""POST /instances/migrate/: dry run (the plan), migration (the results), who may, 400s."""

import pytest

from django_workflows.models import WorkflowInstance

from ..engine.test_migration import payment_v1, payment_v2
from ..factories import StaffFactory, UserFactory
from .conftest import API
from .test_permissions import grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(api_engine, wf_registry):
    wf_registry.register_definition(payment_v1())
    waiting = api_engine.start_workflow("payment", started_by=UserFactory(username="ada"))
    reviewed = api_engine.start_workflow("payment", initial_data={"kind": "review"})
    wf_registry.register_definition(payment_v2())
    return waiting, reviewed


@pytest.fixture
def operator(db):
    return grant(UserFactory(username="operator"), "change_workflowinstance")


def migrate(client, **body):
    body = {"workflow": "payment", "from_version": "1.0.0", "to_version": "2.0.0", **body}
    return client.post(f"{API}/instances/migrate/", body, format="json")


def versions():
    return sorted(WorkflowInstance.objects.values_list("definition__version", flat=True))


def test_a_dry_run_returns_the_plan_and_changes_nothing(client_for, operator, started):
    waiting, reviewed = started
    response = migrate(client_for(operator), dry_run=True)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["dry_run"], body["migrated"]) == (True, 0)
    assert body["instances"] == [
        {
            "instance_id": str(waiting.pk),
            "movable": True,
            "reason": "",
            "positions": ["approval"],
        },
        {
            "instance_id": str(reviewed.pk),
            "movable": False,
            "reason": "step 'review' removed in 2.0.0 and not mapped",
            "positions": ["review"],
        },
    ]
    assert versions() == ["1.0.0", "1.0.0"]


def test_migrates_and_reports_each_instance(client_for, operator, started):
    response = migrate(client_for(operator), step_map={"review": "approval"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["migrated"] == 2 and body["step_map"] == {"review": "approval"}
    assert [(r["migrated"], r["skipped"]) for r in body["instances"]] == [(True, ""), (True, "")]
    assert versions() == ["2.0.0", "2.0.0"]


def test_only_the_instances_named(client_for, operator, started):
    waiting, _ = started
    response = migrate(client_for(operator), instance_ids=[str(waiting.pk)])
    assert response.json()["migrated"] == 1
    assert versions() == ["1.0.0", "2.0.0"]


@pytest.mark.parametrize(
    "who",
    ["anonymous", "user", "staff", "starter", "viewer"],
)
def test_who_may_not_migrate(client_for, started, who, api_engine):
    user = {
        "anonymous": lambda: None,
        "user": lambda: UserFactory(),
        "staff": lambda: StaffFactory(),
        "starter": lambda: WorkflowInstance.objects.get(started_by__username="ada").started_by,
        "viewer": lambda: grant(UserFactory(), "view_workflowinstance"),
    }[who]()
    response = migrate(client_for(user))
    assert response.status_code in (401, 403), response.json()
    assert versions() == ["1.0.0", "1.0.0"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to_version": "9"}, "to_version"),
        ({"to_version": "1.0.0"}, "to_version"),
        ({"step_map": {"nope": "approval"}}, "step_map"),
        ({"step_map": ["x"]}, "step_map"),
        ({"instance_ids": ["x"]}, "instance_ids"),
        ({"workflow": ""}, "workflow"),
        ({"workflow": "nope"}, "workflow"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client_for, operator, started, body, field):
    response = migrate(client_for(operator), **body)
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    assert versions() == ["1.0.0", "1.0.0"]
