"""Substitutes over the API: a substitute's inbox and completions, and /substitutes/."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_workflows.models import HumanTask, Substitution
from django_workflows.substitutes import add_substitute

from ..factories import UserFactory
from .conftest import API

pytestmark = pytest.mark.django_db

TASKS = f"{API}/tasks/"
SUBS = f"{API}/substitutes/"


def when(days):
    return timezone.now() + timedelta(days=days)


@pytest.fixture
def deputy(db):
    return UserFactory(username="deputy")


def ids(response):
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


def test_a_substitute_lists_and_completes_the_absent_users_tasks(
    client_for, api_engine, manager, deputy, task
):
    client = client_for(deputy)
    assert ids(client.get(TASKS)) == []
    assert client.get(f"{TASKS}{task.pk}/").status_code == 404
    add_substitute(manager, deputy, when(-1), when(1))

    assert ids(client.get(TASKS)) == [task.pk]
    assert ids(client.get(TASKS, {"all": 1})) == [task.pk]
    detail = client.get(f"{TASKS}{task.pk}/").json()
    assert detail["can_complete"] is True and detail["completed_on_behalf_of"] is None

    response = client.post(f"{TASKS}{task.pk}/complete/", {"data": {"approved": True}}, "json")
    assert response.status_code == 200, response.json()
    detail = client.get(f"{TASKS}{task.pk}/").json()
    assert (detail["completed_by"], detail["completed_on_behalf_of"]) == (deputy.pk, manager.pk)
    event = next(e for e in response.json()["events"] if e["type"] == "HumanTaskCompleted")
    assert event["payload"]["on_behalf_of_user_id"] == manager.pk


def test_inbox_queries_stay_constant_for_a_substitute(client_for, api_engine, manager, deputy):
    add_substitute(manager, deputy, when(-1), when(1))
    add_substitute(UserFactory(), deputy, when(-1), when(1))
    client = client_for(deputy)

    def count(n):
        while HumanTask.objects.count() < n:
            api_engine.start_workflow("expense", initial_data={"amount": 1})
        with CaptureQueriesContext(connection) as captured:
            assert len(ids(client.get(TASKS))) == n
        return len(captured)

    assert count(3) == count(20)


def test_name_list_and_end_ones_own_substitute(client_for, manager, deputy):
    client = client_for(manager)
    response = client.post(
        SUBS,
        {"substitute": deputy.pk, "ends_at": when(7).isoformat(), "reason": "holidays"},
        "json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["user"], body["substitute"], body["active"]) == (manager.pk, deputy.pk, True)
    assert ids(client.get(SUBS)) == [body["id"]]
    assert ids(client_for(deputy).get(SUBS)) == [body["id"]]  # the substitute sees it too
    assert ids(client_for(UserFactory()).get(SUBS)) == []

    # The substitute may not end it: it is the absent user's.
    assert client_for(deputy).post(f"{SUBS}{body['id']}/end/").status_code == 403
    ended = client.post(f"{SUBS}{body['id']}/end/")
    assert ended.status_code == 200 and ended.json()["active"] is False
    assert Substitution.objects.get().ends_at <= timezone.now()


def test_delete_removes_it(client_for, manager, deputy):
    row = add_substitute(manager, deputy, when(1), when(2))
    assert client_for(UserFactory()).delete(f"{SUBS}{row.pk}/").status_code == 404
    assert client_for(manager).post(f"{SUBS}{row.pk}/end/").status_code == 409  # not begun
    response = client_for(manager).delete(f"{SUBS}{row.pk}/")
    assert response.status_code == 200 and response.json()["id"] == row.pk
    assert not Substitution.objects.exists()


def test_for_someone_else_needs_change_substitution(client_for, manager, deputy, outsider):
    payload = {"user": outsider.pk, "substitute": deputy.pk, "ends_at": when(1).isoformat()}
    assert client_for(manager).post(SUBS, payload, "json").status_code == 403
    assert not Substitution.objects.exists()

    manager.user_permissions.add(Permission.objects.get(codename="change_substitution"))
    response = client_for(manager).post(SUBS, payload, "json")
    assert response.status_code == 201, response.json()
    assert response.json()["user"] == outsider.pk
    assert ids(client_for(manager).get(SUBS)) == [response.json()["id"]]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"ends_at": "tomorrow"}, "ends_at"),
        ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),  # before it starts (now)
        ({"substitute": "me"}, "substitute"),
        ({"substitute": 424242}, "substitute"),
        ({"substitute": 2**70}, "substitute"),
        ({"substitute": None}, "substitute"),
        ({"reason": "x" * 301}, "reason"),
        ({"user": "abc"}, "user"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client_for, manager, deputy, payload, field):
    body = {"substitute": deputy.pk, "ends_at": when(1).isoformat(), **payload}
    response = client_for(manager).post(SUBS, body, "json")
    assert response.status_code == 400, response.json()
    assert field in str(response.json()), response.json()
    assert not Substitution.objects.exists()


def test_oneself_as_substitute_is_a_400(client_for, manager):
    body = {"substitute": manager.pk, "ends_at": when(1).isoformat()}
    response = client_for(manager).post(SUBS, body, "json")
    assert response.status_code == 400
    assert "own substitute" in str(response.json())


def test_unknown_ids_are_404(client_for, manager):
    for bad in ("424242", "abc", str(2**70)):
        assert client_for(manager).get(f"{SUBS}{bad}/").status_code == 404
