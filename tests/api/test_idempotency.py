"""Idempotent starts: the ``Idempotency-Key`` header of ``POST /instances/``.

(Business keys: see ``test_instances.py``; concurrent requests: ``test_concurrency.py``.)
"""

import pytest

from django_workflows import BaseMachineStep, WorkflowDefinition
from django_workflows.api import idempotency
from django_workflows.engine.local import in_callers_transaction
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


# -- the business-key lock ------------------------------------------------------------------


@pytest.fixture
def locks(monkeypatch):
    """The business-key locks the API takes: (parts, inside a transaction, executions so far)."""
    taken = []

    def record(*parts):
        taken.append((parts, in_callers_transaction(), len(EXECUTIONS)))

    monkeypatch.setattr(idempotency, "lock_in_transaction", record)
    EXECUTIONS.clear()
    return taken


EXECUTIONS = []


class Count(BaseMachineStep):
    def execute(self, context):
        EXECUTIONS.append(str(context.instance_id))


@pytest.fixture
def counted(wf_registry):
    wf_registry.register_definition(
        WorkflowDefinition(name="counted", version="1", initial_step="s", steps={"s": Count()})
    )


@pytest.mark.parametrize("header", [{}, {"HTTP_IDEMPOTENCY_KEY": "k1"}])
def test_a_start_without_a_business_key_takes_no_lock(client_for, starter, locks, header):
    response = client_for(starter).post(
        INSTANCES, {"workflow": "notifications"}, format="json", **header
    )

    assert response.status_code == 201
    assert locks == []


def test_the_business_key_lock_is_taken_in_the_start_transaction_before_any_step(
    client_for, starter, locks, counted
):
    client = client_for(starter)
    body = {"workflow": "counted", "business_key": "order-1"}

    first = client.post(INSTANCES, body, format="json")
    again = client.post(INSTANCES, body, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["status"] == "completed"
    assert [first.json()["id"]] == EXECUTIONS  # the step ran, after the lock; once
    parts = (starter.pk, "counted", "order-1")
    assert locks == [(parts, True, 0), (parts, True, 1)]


def test_get_or_start_workflow_needs_a_key_or_a_check(api_engine):
    with pytest.raises(TypeError, match="needs an idempotency_key or existing"):
        api_engine.get_or_start_workflow("notifications")


def test_get_or_start_workflow_returns_what_the_check_finds(api_engine, starter):
    first = api_engine.start_workflow("notifications", started_by=starter)

    found, created = api_engine.get_or_start_workflow("notifications", existing=lambda: first)
    started, created_too = api_engine.get_or_start_workflow("notifications", existing=lambda: None)

    assert (found.pk, created) == (first.pk, False)
    assert created_too is True
    assert started.pk != first.pk
    assert WorkflowInstance.objects.count() == 2
