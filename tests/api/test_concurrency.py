"""Races through the API on PostgreSQL: concurrent requests, one outcome."""

import pytest
from rest_framework.test import APIClient

from django_workflows.models import HumanTask, WorkflowInstance

from ..helpers import in_threads
from .conftest import API

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def logged_in(user):
    client = APIClient()
    client.force_login(user)
    return client


@pytest.mark.parametrize("round_", range(3))
def test_a_double_completion_completes_once(manager, managers, task, round_):
    clients = [logged_in(manager), logged_in(manager)]
    url = f"{API}/tasks/{task.pk}/complete/"

    responses = in_threads(
        *(lambda c=c: c.post(url, {"data": {"approved": False}}, format="json") for c in clients)
    )

    assert sorted(r.status_code for r in responses) == [200, 409], responses
    conflict = next(r for r in responses if r.status_code == 409)
    assert conflict.json()["code"] == "task_not_open"
    instance = WorkflowInstance.objects.get(pk=task.instance_id)
    assert instance.status == "completed"
    assert instance.events.filter(type="HumanTaskCompleted").count() == 1
    assert HumanTask.objects.get(pk=task.pk).status == "completed"


@pytest.mark.parametrize("header", [{}, {"HTTP_IDEMPOTENCY_KEY": "k1"}])
def test_concurrent_identical_starts_start_one_instance(starter, header):
    clients = [logged_in(starter), logged_in(starter)]
    body = {"workflow": "notifications", "business_key": "order-1"}

    responses = in_threads(
        *(lambda c=c: c.post(f"{API}/instances/", body, format="json", **header) for c in clients)
    )

    assert sorted(r.status_code for r in responses) == [200, 201], responses
    assert len({r.json()["id"] for r in responses}) == 1
    assert WorkflowInstance.objects.count() == 1


def test_concurrent_starts_with_one_idempotency_key_start_one_instance(starter):
    clients = [logged_in(starter), logged_in(starter)]

    responses = in_threads(
        *(
            lambda c=c: c.post(
                f"{API}/instances/",
                {"workflow": "notifications"},
                format="json",
                HTTP_IDEMPOTENCY_KEY="k2",
            )
            for c in clients
        )
    )

    assert sorted(r.status_code for r in responses) == [200, 201], responses
    assert WorkflowInstance.objects.count() == 1
