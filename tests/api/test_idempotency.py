"""Idempotent starts: the ``Idempotency-Key`` header of ``POST /instances/``.

(Business keys: see ``test_instances.py``; concurrent requests: ``test_concurrency.py``.)
"""

import pytest

from django_workflows.models import IdempotencyKey, WorkflowInstance

from .conftest import API

pytestmark = pytest.mark.django_db

INSTANCES = f"{API}/instances/"


def start(client, key, **body):
    body.setdefault("workflow", "notifications")
    return client.post(INSTANCES, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_repeated_request_returns_the_first_instance(client_for, starter):
    client = client_for(starter)

    first = start(client, "k1", data={"n": 1})
    again = start(client, "k1", data={"n": 1})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert WorkflowInstance.objects.count() == 1
    assert str(IdempotencyKey.objects.get(key="k1").instance_id) == first.json()["id"]


def test_keys_are_per_user(client_for, starter, outsider):
    first = start(client_for(starter), "k1")
    other = start(client_for(outsider), "k1")

    assert (first.status_code, other.status_code) == (201, 201)
    assert WorkflowInstance.objects.count() == 2


def test_different_keys_start_different_instances(client_for, starter):
    client = client_for(starter)

    assert [start(client, key).status_code for key in ("k1", "k2")] == [201, 201]
    assert WorkflowInstance.objects.count() == 2


def test_a_key_used_for_another_workflow_is_409(client_for, starter):
    client = client_for(starter)
    start(client, "k1")

    response = start(client, "k1", workflow="review", data={"score": 1})

    assert response.status_code == 409
    assert "was used to start 'notifications'" in response.json()["detail"]
    assert WorkflowInstance.objects.count() == 1


@pytest.mark.parametrize("key", ["k" * 256, "  "])
def test_a_key_of_the_wrong_length_is_400(client_for, starter, key):
    response = start(client_for(starter), key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert not WorkflowInstance.objects.exists()


def test_a_failed_start_keeps_no_key(client_for, starter):
    client = client_for(starter)

    assert start(client, "k1", workflow="nope").status_code == 400
    assert not IdempotencyKey.objects.exists()
    assert start(client, "k1").status_code == 201


def test_a_business_key_used_before_wins_over_a_new_idempotency_key(client_for, starter):
    client = client_for(starter)
    first = client.post(
        INSTANCES, {"workflow": "notifications", "business_key": "b"}, format="json"
    )

    again = start(client, "k1", business_key="b")

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert WorkflowInstance.objects.count() == 1
