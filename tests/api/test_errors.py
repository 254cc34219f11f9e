"""Error responses: one JSON shape, the right status, and no partial state."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from rest_framework import exceptions

from django_workflows.api.exceptions import exception_handler
from django_workflows.exceptions import (
    ContextError,
    DefinitionError,
    InstanceNotFound,
    StateConflict,
    StepNotFound,
    TaskNotFound,
    TaskNotOpen,
    WorkflowNotFound,
)
from django_workflows.models import HumanTask, WorkflowInstance

from .conftest import API

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (WorkflowNotFound("no workflow named 'x' is registered"), 404, "not_found"),
        (InstanceNotFound("no workflow instance with id 'x'"), 404, "not_found"),
        (TaskNotFound("no human task with id 'x'"), 404, "not_found"),
        (StepNotFound("workflow x 1 has no step 'y'"), 404, "not_found"),
        (StateConflict("instance x is already completed"), 409, "conflict"),
        (TaskNotOpen("task 1 is completed"), 409, "task_not_open"),
        (DefinitionError("the graph of workflow x 1 differs"), 409, "definition_error"),
        (ContextError("context value for 'a' is not JSON-serializable"), 400, "invalid"),
        (ValidationError({"comment": ["Too long."]}), 400, "invalid"),
        (ValidationError("Not allowed."), 400, "invalid"),
        (PermissionDenied("you may not complete task 1"), 403, "permission_denied"),
        (Http404(), 404, "not_found"),
        (exceptions.NotAuthenticated(), 401, "not_authenticated"),
        (exceptions.Throttled(wait=3), 429, "throttled"),
    ],
)
def test_the_handler_maps_engine_and_django_exceptions(exc, status, code):
    response = exception_handler(exc, {})

    assert response.status_code == status
    assert response.data["code"] == code
    assert isinstance(response.data["detail"], str) and response.data["detail"]
    assert ("errors" in response.data) == (status == 400)


def test_the_handler_keeps_the_message_and_field_errors():
    response = exception_handler(ValidationError({"comment": ["Too long."]}), {})

    assert response.data == {
        "detail": "Invalid input: comment: Too long.",
        "code": "invalid",
        "errors": {"comment": ["Too long."]},
    }
    plain = exception_handler(ValidationError("Not allowed."), {})
    assert plain.data["errors"] == {"non_field_errors": ["Not allowed."]}
    assert plain.data["detail"] == "Invalid input: Not allowed."


def test_the_handler_leaves_other_exceptions_to_django():
    assert exception_handler(RuntimeError("bug"), {}) is None


def test_the_handler_keeps_drf_headers():
    response = exception_handler(exceptions.Throttled(wait=3), {})
    assert response["Retry-After"] == "3"


@pytest.mark.parametrize(
    "path",
    [
        "/instances/",
        "/instances/{instance}/cancel/",
        "/instances/{instance}/retry/",
        "/tasks/{task}/complete/",
    ],
)
def test_malformed_json_is_400_and_changes_nothing(client_for, superuser, task, path):
    url = API + path.format(instance=task.instance_id, task=task.pk)

    response = client_for(superuser).post(
        url, '{"workflow": "expense",', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert response.json()["detail"].startswith("JSON parse error")
    assert WorkflowInstance.objects.get().status == "waiting"
    assert HumanTask.objects.get().status == "open"


def test_json_with_nan_is_400(client_for, superuser):
    response = client_for(superuser).post(
        f"{API}/instances/",
        '{"workflow": "expense", "data": {"a": NaN}}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert not WorkflowInstance.objects.exists()


def test_unsupported_media_type_is_415(client_for, superuser):
    response = client_for(superuser).post(
        f"{API}/instances/", "workflow=x", content_type="text/plain"
    )

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_form_data_is_accepted(client_for, superuser):
    response = client_for(superuser).post(f"{API}/instances/", {"workflow": "notifications"})

    assert response.status_code == 201


def test_method_not_allowed_is_405_json(client_for, superuser, task):
    client = client_for(superuser)

    for response in (
        client.delete(f"{API}/instances/{task.instance_id}/"),
        client.put(f"{API}/tasks/{task.pk}/", {}, format="json"),
        client.get(f"{API}/tasks/{task.pk}/complete/"),
    ):
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"


def test_unknown_definition_is_404(client_for, superuser):
    response = client_for(superuser).get(f"{API}/definitions/nope/")

    assert response.status_code == 404
    assert response.json() == {"detail": "no workflow named 'nope'", "code": "not_found"}
