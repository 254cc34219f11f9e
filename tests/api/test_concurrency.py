"""Races through the API on PostgreSQL: concurrent requests, one outcome."""

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from django_workflows import BaseMachineStep, WorkflowDefinition
from django_workflows.models import HumanTask, WorkflowInstance

from ..helpers import TIMEOUT, in_threads
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


# -- starts run their steps outside the de-duplication lock -------------------------------


class Meet(BaseMachineStep):
    """Waits until every start of the test is executing this step at the same time."""

    barrier: threading.Barrier

    def execute(self, context):
        self.barrier.wait(TIMEOUT)  # BrokenBarrierError (the step fails) if they never meet


class Hang(BaseMachineStep):
    """With ``context["hang"]``, blocks until the test releases it."""

    entered = threading.Event()
    release = threading.Event()

    def execute(self, context):
        if context.get("hang"):
            self.entered.set()
            self.release.wait(2 * TIMEOUT)


@pytest.fixture
def gates(wf_registry):
    for name, step in (("meet", Meet()), ("hang", Hang())):
        wf_registry.register_definition(
            WorkflowDefinition(name=name, version="1", initial_step="s", steps={"s": step})
        )
    Hang.entered, Hang.release = threading.Event(), threading.Event()
    yield
    Hang.release.set()


def within_deadline(call):
    """``call()`` in a thread; its result, or AssertionError if it is still blocked."""
    results = []

    def run():
        try:
            results.append(call())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the request was blocked"
    return results[0]


@pytest.mark.parametrize(
    "keys",
    [
        [{}, {}, {}],
        [{"HTTP_IDEMPOTENCY_KEY": "k1"}, {"HTTP_IDEMPOTENCY_KEY": "k2"}, {}],
        [{"business_key": "a"}, {"business_key": "b"}, {}],
    ],
    ids=["no key", "idempotency keys", "business keys"],
)
def test_concurrent_starts_by_one_user_run_their_steps_at_the_same_time(starter, gates, keys):
    # Each start's step waits until all three are executing: they meet only if no start
    # holds a lock over the steps of another.
    Meet.barrier = threading.Barrier(len(keys))

    def start(client, key):
        body = {"workflow": "meet", "business_key": key.get("business_key", "")}
        headers = {k: v for k, v in key.items() if k.startswith("HTTP_")}
        return client.post(f"{API}/instances/", body, format="json", **headers)

    responses = in_threads(*(lambda k=k: start(logged_in(starter), k) for k in keys))

    assert [r.status_code for r in responses] == [201, 201, 201], responses
    assert [r.json()["status"] for r in responses] == ["completed"] * 3
    assert WorkflowInstance.objects.count() == 3


@pytest.mark.parametrize("hung_key", ["", "order-1"])
def test_a_hung_step_blocks_no_other_start_of_its_user(starter, gates, hung_key):
    body = {"workflow": "hang", "business_key": hung_key, "data": {"hang": True}}

    def start_hung():
        try:
            logged_in(starter).post(f"{API}/instances/", body, format="json")
        finally:
            connections.close_all()

    hung = threading.Thread(target=start_hung)
    hung.start()
    try:
        assert Hang.entered.wait(TIMEOUT)
        first = WorkflowInstance.objects.get()  # committed before its step started

        def start(business_key):
            return logged_in(starter).post(
                f"{API}/instances/",
                {"workflow": "hang", "business_key": business_key},
                format="json",
            )

        none, other = within_deadline(lambda: start("")), within_deadline(lambda: start("b"))
        assert (none.status_code, none.json()["status"]) == (201, "completed")
        assert (other.status_code, other.json()["status"]) == (201, "completed")
        if hung_key:
            # The same business key: the first instance, at once, still running its step.
            again = within_deadline(lambda: start(hung_key))
            assert again.status_code == 200
            assert (again.json()["id"], again.json()["status"]) == (str(first.pk), "running")
    finally:
        Hang.release.set()
        hung.join(TIMEOUT)
    assert not hung.is_alive()
    first.refresh_from_db()
    assert first.status == "completed"
    assert WorkflowInstance.objects.count() == 3


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_starts_with_one_business_key_and_other_idempotency_keys_start_one(
    starter, round_
):
    body = {"workflow": "notifications", "business_key": "order-2"}

    responses = in_threads(
        *(
            lambda key=key: logged_in(starter).post(
                f"{API}/instances/", body, format="json", HTTP_IDEMPOTENCY_KEY=key
            )
            for key in ("k1", "k2", "k3")
        )
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 201], responses
    assert len({r.json()["id"] for r in responses}) == 1
    assert WorkflowInstance.objects.count() == 1
