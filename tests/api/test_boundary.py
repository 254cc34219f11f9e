"""Timeout edges over the API: a step run shows when its timeout fires; a completion
after the timeout is a 409 conflict."""

from datetime import timedelta

import pytest

from django_workflows.testing import advance_time

from ..engine.test_boundary import definitions
from ..factories import StaffFactory
from .conftest import API

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting(api_engine):
    for definition in definitions():
        api_engine.registry.register_definition(definition)
    return api_engine.start_workflow("approval", version="1")


def test_a_waiting_run_shows_its_timeout(client_for, waiting):
    admin = StaffFactory(is_superuser=True)
    body = client_for(admin).get(f"{API}/instances/{waiting.pk}/").json()

    run = body["step_runs"][0]
    assert run["step_name"] == "approval"
    assert run["timeout_at"] is not None
    assert run["timeout_at"] > run["created_at"]


def test_completing_a_timed_out_task_is_a_conflict(client_for, waiting, api_engine):
    admin = StaffFactory(is_superuser=True)
    task = waiting.human_tasks.get()
    advance_time(timedelta(days=3, minutes=1), api_engine)

    response = client_for(admin).post(
        f"{API}/tasks/{task.pk}/complete/", {"data": {"approved": True}}, format="json"
    )

    assert response.status_code == 409, response.content
    assert "(it is canceled, timed out)" in response.json()["detail"]
