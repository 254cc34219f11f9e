"""Authentication (session, token) and who sees which instances."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from django_workflows.models import WorkflowInstance
from django_workflows.permissions import visible_instances

from ..factories import GroupFactory, StaffFactory, UserFactory
from .conftest import API

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/definitions/"),
    ("get", "/definitions/expense/"),
    ("get", "/instances/"),
    ("post", "/instances/"),
    ("get", "/instances/{instance}/"),
    ("post", "/instances/{instance}/cancel/"),
    ("post", "/instances/{instance}/retry/"),
    ("get", "/tasks/"),
    ("get", "/tasks/{task}/"),
    ("post", "/tasks/{task}/claim/"),
    ("post", "/tasks/{task}/unclaim/"),
    ("post", "/tasks/{task}/complete/"),
    ("get", "/schema/"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_requests_are_401_with_a_token_challenge(client_for, task, method, path):
    url = API + path.format(instance=task.instance_id, task=task.pk)

    response = getattr(client_for(), method)(url, {}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_inactive_users_are_refused(token_client, task, method, path):
    user = UserFactory(is_active=False)
    url = API + path.format(instance=task.instance_id, task=task.pk)

    response = getattr(token_client(user), method)(url, {}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_token_authentication(token_client, starter, expense):
    response = token_client(starter).get(f"{API}/instances/")

    assert response.status_code == 200
    assert [i["id"] for i in response.json()["results"]] == [str(expense.pk)]


def test_token_authentication_starts_as_the_token_user(token_client, starter):
    response = token_client(starter).post(
        f"{API}/instances/", {"workflow": "notifications"}, format="json"
    )

    assert response.status_code == 201
    assert WorkflowInstance.objects.get().started_by == starter


def test_a_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    response = client.get(f"{API}/instances/")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_session_authentication_by_login(starter, expense):
    client = APIClient()
    assert client.login(username="starter", password="pw")

    response = client.get(f"{API}/instances/{expense.pk}/")

    assert response.status_code == 200


def test_session_authentication_checks_csrf_on_posts(starter, expense):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="starter", password="pw")

    response = client.post(f"{API}/instances/{expense.pk}/cancel/", {}, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert WorkflowInstance.objects.get(pk=expense.pk).status == "waiting"


# -- who sees which instances ------------------------------------------------------


def visible_ids(client):
    response = client.get(f"{API}/instances/")
    assert response.status_code == 200
    return {item["id"] for item in response.json()["results"]}


@pytest.fixture
def world(api_engine, starter, managers, outsider):
    """expense (started by starter, a task for managers), approval (assigned to outsider),
    and one started by someone else that involves nobody."""
    return {
        "expense": api_engine.start_workflow(
            "expense", initial_data={"amount": 1}, started_by=starter
        ),
        "approval": api_engine.start_workflow(
            "approval", initial_data={"assignee": outsider.pk}, started_by=starter
        ),
        "private": api_engine.start_workflow("notifications", started_by=UserFactory()),
    }


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("starter", {"expense", "approval"}),
        ("manager", {"expense"}),  # a candidate group of its task
        ("outsider", {"approval"}),  # the assignee of its task
        ("nobody", set()),
        ("staff", set()),  # staff status alone grants nothing in the API
        ("viewer", {"expense", "approval", "private"}),  # view_workflowinstance
        ("superuser", {"expense", "approval", "private"}),
    ],
)
def test_who_sees_which_instances(
    client_for, world, starter, manager, outsider, superuser, who, expected
):
    users = {
        "starter": starter,
        "manager": manager,
        "outsider": outsider,
        "nobody": UserFactory(),
        "staff": StaffFactory(),
        "viewer": UserFactory(username="viewer"),
        "superuser": superuser,
    }
    users["viewer"].user_permissions.add(Permission.objects.get(codename="view_workflowinstance"))
    client = client_for(users[who])

    assert visible_ids(client) == {str(world[name].pk) for name in expected}
    for name, instance in world.items():
        status = client.get(f"{API}/instances/{instance.pk}/").status_code
        assert status == (200 if name in expected else 404), name


def test_claimers_and_completers_keep_seeing_the_instance(
    client_for, world, manager, managers, api_engine
):
    expense = world["expense"]
    task = expense.human_tasks.get()
    api_engine.claim_task(task.pk, manager)
    api_engine.complete_task(task.pk, manager, {"approved": False})
    manager.groups.remove(managers)  # no longer a candidate: seen as the completer

    assert visible_ids(client_for(manager)) == {str(expense.pk)}


def test_a_member_of_a_group_of_an_old_task_sees_the_instance(world):
    # Visibility counts every task of the instance, open or not.
    member = UserFactory(groups=[GroupFactory(name="managers")])
    assert set(visible_instances(member)) == {world["expense"]}
