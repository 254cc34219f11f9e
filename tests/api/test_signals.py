"""POST /signals/ and GET /instances/{id}/signals/: who may send, 201/200, 400/404/409."""

import pytest

from django_workflows import Edge, WaitForSignal, WorkflowDefinition
from django_workflows.models import WorkflowSignal

from ..factories import StaffFactory, UserFactory
from .conftest import API, Done
from .test_permissions import grant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _payment(wf_registry):
    wf_registry.register_definition(
        WorkflowDefinition(
            name="pay",
            version="1",
            initial_step="paid",
            steps={"paid": WaitForSignal("payment_received", key="payment"), "done": Done()},
            edges=[Edge("paid", "done")],
        )
    )


@pytest.fixture
def starter(db):
    return UserFactory(username="starter")


@pytest.fixture
def instance(api_engine, starter):
    return api_engine.start_workflow("pay", business_key="order-9", started_by=starter)


def send(client, **body):
    return client.post(f"{API}/signals/", body, format="json")


def test_the_starter_sends_the_signal_and_the_instance_goes_on(client_for, starter, instance):
    response = send(
        client_for(starter),
        name="payment_received",
        data={"amount": 5},
        instance_id=str(instance.pk),
        idempotency_key="pay-1",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["state"], body["consumed_by_step"]) == (
        "payment_received",
        "consumed",
        "paid",
    )
    assert body["sent_by"] == starter.pk
    instance.refresh_from_db()
    assert instance.status == "completed"
    assert instance.context == {"payment": {"amount": 5}, "done": True}

    again = send(
        client_for(starter),
        name="payment_received",
        data={"amount": 6},
        instance_id=str(instance.pk),
        idempotency_key="pay-1",
    )
    assert again.status_code == 200
    assert again.json()["id"] == body["id"] and again.json()["data"] == {"amount": 5}
    assert WorkflowSignal.objects.count() == 1


def test_a_business_key_targets_the_active_instance(client_for, starter, instance):
    response = send(client_for(starter), name="other", business_key="order-9")
    assert response.status_code == 201
    assert response.json()["state"] == "pending"
    listed = client_for(starter).get(f"{API}/instances/{instance.pk}/signals/")
    assert listed.status_code == 200
    assert [row["name"] for row in listed.json()["results"]] == ["other"]


def test_a_replay_by_business_key_after_completion_answers_200(client_for, starter, instance):
    body = {"name": "payment_received", "business_key": "order-9", "idempotency_key": "evt-1"}
    assert send(client_for(starter), **body).status_code == 201
    instance.refresh_from_db()
    assert instance.status == "completed"
    again = send(client_for(starter), **body)
    assert again.status_code == 200, again.json()
    assert again.json()["state"] == "consumed"
    outsider = send(client_for(UserFactory()), **body)  # not one they see
    assert outsider.status_code == 404
    assert WorkflowSignal.objects.count() == 1


def test_the_send_signal_permission_reaches_every_instance(client_for, instance):
    service = grant(UserFactory(), "send_signal")
    response = send(client_for(service), name="payment_received", instance_id=str(instance.pk))
    assert response.status_code == 201
    operator = grant(UserFactory(), "change_workflowinstance")
    response = send(client_for(operator), name="x", instance_id=str(instance.pk))
    assert response.status_code == 409  # completed by the first signal: nothing is sent
    assert response.json()["code"] == "conflict"


def test_who_may_not_send(client_for, instance):
    outsider = UserFactory()
    response = send(client_for(outsider), name="payment_received", instance_id=str(instance.pk))
    assert response.status_code == 404  # not one they see
    # Staff status grants nothing; seeing the instance is not enough to send to it.
    viewer = grant(StaffFactory(), "view_workflowinstance")
    response = send(client_for(viewer), name="payment_received", instance_id=str(instance.pk))
    assert response.status_code == 403
    assert client_for(outsider).get(f"{API}/instances/{instance.pk}/signals/").status_code == 404
    assert client_for().post(f"{API}/signals/", {}, format="json").status_code in (401, 403)
    assert WorkflowSignal.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": {}}, "name"),
        ({"name": "s"}, "instance_id"),
        ({"name": "s", "instance_id": "not-a-uuid"}, "instance_id"),
        ({"name": "s", "business_key": "order-9", "instance_id": None}, "instance_id"),
        ({"name": "s", "business_key": "order-9", "data": [1]}, "data"),
        ({"name": "s", "business_key": "order-9", "idempotency_key": ""}, "idempotency_key"),
        ({"name": "s" * 201, "business_key": "order-9"}, "name"),
        # PostgreSQL's jsonb stores no NUL; data over MAX_CONTEXT_BYTES would fail the wait
        ({"name": "s", "business_key": "order-9", "data": {"a": "x\x00y"}}, "data"),
        ({"name": "s", "business_key": "order-9", "data": {"a": "x" * (1024 * 1024)}}, "data"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client_for, starter, instance, body, field):
    response = send(client_for(starter), **body)
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    assert WorkflowSignal.objects.count() == 0


def test_an_unknown_business_key_is_a_404(client_for, starter, instance):
    response = send(client_for(starter), name="s", business_key="nope")
    assert response.status_code == 404
