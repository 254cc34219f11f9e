"""The OpenAPI schema: generated without warnings, valid, served, every operation typed."""

import io

import pytest
import yaml
from django.core.management import call_command

from .conftest import API

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("get", "/"),
    ("get", "/definitions/"),
    ("get", "/definitions/{name}/"),
    ("get", "/instances/"),
    ("post", "/instances/"),
    ("get", "/instances/{id}/"),
    ("post", "/instances/{id}/cancel/"),
    ("post", "/instances/{id}/retry/"),
    ("get", "/tasks/"),
    ("get", "/tasks/{id}/"),
    ("post", "/tasks/{id}/claim/"),
    ("post", "/tasks/{id}/unclaim/"),
    ("post", "/tasks/{id}/reassign/"),
    ("post", "/tasks/{id}/complete/"),
    ("get", "/substitutes/"),
    ("post", "/substitutes/"),
    ("get", "/substitutes/{id}/"),
    ("delete", "/substitutes/{id}/"),
    ("post", "/substitutes/{id}/end/"),
    ("post", "/tasks/bulk-complete/"),
    ("get", "/instances/{id}/comments/"),
    ("post", "/instances/{id}/comments/"),
    ("get", "/tasks/{id}/comments/"),
    ("post", "/tasks/{id}/comments/"),
    ("post", "/signals/"),
    ("get", "/instances/{id}/signals/"),
    ("post", "/instances/migrate/"),
    ("get", "/instances/{id}/export/"),
}


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    out = io.StringIO()
    with django_db_blocker.unblock():
        call_command(
            "spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=io.StringIO()
        )
    return yaml.safe_load(out.getvalue())


def operations(schema):
    return {
        (method, path.removeprefix(API)): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def test_generates_without_warnings_and_lists_every_endpoint(schema):
    # The schema view itself is left out, as drf-spectacular does.
    assert schema["openapi"].startswith("3.")
    assert set(operations(schema)) == OPERATIONS


def test_every_operation_has_typed_responses_and_documented_errors(schema):
    for (method, path), operation in operations(schema).items():
        responses = operation["responses"]
        ok = [code for code in responses if code.startswith("2")]
        assert ok, (method, path)
        for code in ok:
            assert responses[code]["content"], (method, path, code)
        for code in ("401", "403"):
            error = responses[code]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/Error"}, (method, path, code)
        if "{" in path:
            assert "404" in responses, (method, path)


def test_actions_with_a_body_have_a_typed_request(schema):
    ops = operations(schema)
    bodies = {
        "/instances/": "Start",
        "/instances/{id}/cancel/": "Cancel",
        "/instances/{id}/retry/": "Retry",
        "/tasks/{id}/complete/": "Complete",
        "/tasks/bulk-complete/": "BulkComplete",
        "/instances/{id}/comments/": "CommentInput",
        "/tasks/{id}/comments/": "CommentInput",
        "/signals/": "SendSignal",
        "/instances/migrate/": "Migrate",
    }
    for path, component in bodies.items():
        content = ops[("post", path)]["requestBody"]["content"]["application/json"]
        assert content["schema"] == {"$ref": f"#/components/schemas/{component}"}
    assert "409" in ops[("post", "/tasks/{id}/complete/")]["responses"]
    for path in ("/instances/{id}/comments/", "/tasks/{id}/comments/"):  # a file goes multipart
        content = ops[("post", path)]["requestBody"]["content"]["multipart/form-data"]
        assert content["schema"] == {"$ref": "#/components/schemas/CommentInput"}
    assert "400" in ops[("post", "/tasks/{id}/complete/")]["responses"]


def test_list_filters_pagination_and_ordering_are_documented(schema):
    ops = operations(schema)
    instance_params = {p["name"] for p in ops[("get", "/instances/")]["parameters"]}
    assert instance_params == {
        "status",
        "workflow",
        "version",
        "business_key",
        "started_by",
        "parent",
        "started_after",
        "started_before",
        "limit",
        "offset",
        "ordering",
    }
    task_params = {p["name"] for p in ops[("get", "/tasks/")]["parameters"]}
    assert {"all", "status", "instance", "workflow", "step_name", "limit", "offset"} <= task_params
    start_params = {p["name"] for p in ops[("post", "/instances/")]["parameters"]}
    assert start_params == {"Idempotency-Key"}


def test_statuses_are_named_enums(schema):
    components = schema["components"]["schemas"]
    assert components["WorkflowStatusEnum"]["enum"] == [
        "pending",
        "running",
        "waiting",
        "completed",
        "failed",
        "canceled",
    ]
    assert components["TaskStatusEnum"]["enum"] == ["open", "completed", "canceled"]
    assert "StepRunStatusEnum" in components


def test_schema_is_served_to_logged_in_users(client_for, starter):
    client = client_for(starter)

    as_yaml = client.get(f"{API}/schema/")
    as_json = client.get(f"{API}/schema/", {"format": "json"})

    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.content)["info"]["title"] == "django-workflows API"
    assert as_json.status_code == 200
    assert f"{API}/tasks/{{id}}/complete/" in as_json.json()["paths"]
