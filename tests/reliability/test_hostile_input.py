"""Hostile and bad input: a clear error, the right status, and nothing changed.

Every refused request is checked against a snapshot of the runtime rows (instances with
their status and context, step runs, tasks, events, idempotency keys, definition
versions): a 4xx leaves all of them as they were. Covered: malformed JSON, wrong types,
payloads over the context size limit and over Django's upload limit, unknown and
malformed ids, NaN/Infinity, condition strings that try to escape the evaluator (at
registration) or blow up (at evaluation), completions by users who may not, requests
without credentials or without a CSRF token, and HTML in context values, titles and
error messages (escaped in the admin, plain strings in the API). A Hypothesis run posts
random JSON to start, complete, cancel and retry: never a 500.

Bugs these tests found are fixed in the code.
"""

import json
import threading
import time
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import django_workflows.engine as engine_module
from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    ConditionError,
    DefinitionError,
    Edge,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)
from django_workflows.conditions import compile_condition
from django_workflows.exceptions import ConditionEvaluationError
from django_workflows.models import (
    DefinitionVersion,
    HumanTask,
    IdempotencyKey,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
)

from ..factories import GroupFactory, StaffFactory, UserFactory

pytestmark = [pytest.mark.reliability, pytest.mark.django_db]

API = "/api/workflows"
EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
#: Every status the API may answer a POST with; 500 is not one of them.
ALLOWED = {200, 201, 400, 403, 404, 409, 413, 415}
SQLITE = connection.vendor == "sqlite"
LIMIT_TEXT = "1,048,576"  # MAX_CONTEXT_BYTES' default, as the error message writes it
MIB = 1024 * 1024


# -- workflows ------------------------------------------------------------------------------


class Note(BaseHumanStep):
    """A managers' task that takes any data (no form). Its title and its assignee come
    from the context."""

    candidate_groups = ("managers",)

    def get_title(self, context):
        return str(context.get("title", "Note"))

    def get_assignee(self, context):
        return context.get("assignee")


class Done(BaseMachineStep):
    def execute(self, context):
        context.set("done", True)


class Boom(BaseMachineStep):
    """Fails with ``context['message']`` as its error."""

    def execute(self, context):
        raise RuntimeError(str(context.get("message", "boom")))


def note_flow():
    return WorkflowDefinition(
        name="note",
        version="1",
        initial_step="note",
        steps={"note": Note(), "done": Done()},
        edges=[Edge("note", "done")],
    )


def boom_flow():
    return WorkflowDefinition(
        name="boom",
        version="1",
        initial_step="start",
        steps={"start": Done(), "boom": Boom()},
        edges=[Edge("start", "boom")],
    )


#: Conditions that blow up at evaluation on hostile context values, by workflow name:
#: (condition, initial data, words of the error).
BLOWUPS = {
    "power": ("10 ** context.get('n') > 0", {"n": 10**9}, "exponent exceeds 100"),
    "repeat": ("len('x' * context.get('n')) > 0", {"n": 10**12}, "sequence repetition"),
    "square": ("context.get('n') * context.get('n') > 0", {"n": 2**4000}, "exceeds 4096 bits"),
    "digits": ("int(context.get('s')) > 0", {"s": "9" * 5000}, "ValueError"),
    "compare": ("context.get('n') > 'a'", {"n": 1}, "TypeError"),
    "format": ("context.get('s') % 1 == ''", {"s": "%999999999d"}, "string formatting"),
    "rounding": ("round(1, -context.get('n')) == 0", {"n": 10**6}, "ndigits exceeds"),
}


def blowup_flow(name):
    condition = BLOWUPS[name][0]
    return WorkflowDefinition(
        name=name,
        version="1",
        initial_step="start",
        steps={"start": Done(), "yes": Done(), "no": Done()},
        edges=[Edge("start", "yes", condition=condition), Edge("start", "no")],
    )


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def hostile_engine(engine, wf_registry, monkeypatch):
    """``get_engine()`` (what the API and the admin call) is the tests' engine, with the
    workflows of tests/workflows.py and of this module."""
    for definition in (note_flow(), boom_flow(), *map(blowup_flow, BLOWUPS)):
        wf_registry.register_definition(definition)
    monkeypatch.setattr(engine_module, "_default", engine)
    return engine


@pytest.fixture
def people(db):
    managers = GroupFactory(name="managers")
    viewer = StaffFactory(username="viewer")
    viewer.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="django_workflows",
            codename__in=["view_humantask", "view_workflowinstance"],
        )
    )
    return SimpleNamespace(
        root=StaffFactory(username="root", is_superuser=True),
        starter=UserFactory(username="starter"),
        manager=StaffFactory(username="manager", groups=[managers]),
        other_manager=StaffFactory(username="other_manager", groups=[managers]),
        outsider=UserFactory(username="outsider"),
        staff=StaffFactory(username="staff"),
        viewer=viewer,
    )


@pytest.fixture
def world(hostile_engine, people):
    """An expense instance waiting for a manager (its task), and a failed instance."""
    waiting = hostile_engine.start_workflow(
        "expense", initial_data={"amount": 5}, started_by=people.starter
    )
    failed = hostile_engine.start_workflow(
        "boom", initial_data={"message": "down"}, started_by=people.starter
    )
    assert waiting.status == WorkflowStatus.WAITING
    assert failed.status == WorkflowStatus.FAILED
    return SimpleNamespace(waiting=waiting, task=waiting.human_tasks.get(), failed=failed)


def snapshot():
    """The runtime rows, compared before and after a refused request."""
    return {
        "instances": list(
            WorkflowInstance.objects.order_by("pk").values_list(
                "pk", "status", "context", "current_steps", "tokens", "failed_step", "error"
            )
        ),
        "runs": list(
            StepRun.objects.order_by("pk").values_list(
                "pk", "status", "attempt", "changes", "error", "lease_token"
            )
        ),
        "tasks": list(
            HumanTask.objects.order_by("pk").values_list(
                "pk", "status", "claimed_by", "completed_by", "result"
            )
        ),
        "events": WorkflowEvent.objects.count(),
        "idempotency_keys": IdempotencyKey.objects.count(),
        "definitions": DefinitionVersion.objects.count(),
    }


def api(user=None, *, csrf=False):
    """An API client, logged in by session as ``user`` (anonymous without one).

    A server error is a response to assert on (500), not an exception in the test."""
    client = APIClient(enforce_csrf_checks=csrf)
    client.raise_request_exception = False
    if user is not None:
        client.force_login(user)
    return client


def post_json(client, url, value, **extra):
    """POST ``value`` as JSON."""
    return post_raw(client, url, json.dumps(value), **extra)


def post_raw(client, url, body, **extra):
    """POST ``body`` (text or bytes) as it is, labelled JSON."""
    return client.post(url, body, content_type="application/json", **extra)


def json_error(response, status, code=None):
    """The response is a JSON error body with ``status`` (and ``code``); returns it."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def urls(world):
    return {
        "start": f"{API}/instances/",
        "cancel": f"{API}/instances/{world.waiting.pk}/cancel/",
        "retry": f"{API}/instances/{world.failed.pk}/retry/",
        "complete": f"{API}/tasks/{world.task.pk}/complete/",
    }


def within(seconds, fn):
    """Run ``fn`` (no database) in a thread; fail if it has not returned in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds}s: it hangs"
    return outcome, time.monotonic() - started


# -- malformed JSON ---------------------------------------------------------------------------

MALFORMED = [
    '{"workflow": "expense",',
    "{'workflow': 'expense'}",
    '{"workflow": "expense"}}',
    '{"data": {"a": 1,}}',
    '{"a": 01}',
    "[1, 2",
    '"unterminated',
    "{",
    "nul\x00l",
    b"\xff\xfe{\x00}",  # not UTF-8
    b'{"a": "\xc3\x28"}',  # an invalid UTF-8 sequence inside a string
]


@pytest.mark.parametrize("endpoint", ["start", "cancel", "retry", "complete"])
@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_json_is_a_400_parse_error_and_changes_nothing(world, people, endpoint, body):
    before = snapshot()

    response = post_raw(api(people.root), urls(world)[endpoint], body)

    assert json_error(response, 400, "parse_error")["detail"].startswith("JSON parse error")
    assert snapshot() == before


# -- wrong types ----------------------------------------------------------------------------

WRONG_TYPES = [
    # (endpoint, body, the field named in the errors)
    ("start", [{"workflow": "expense"}], "non_field_errors"),
    ("start", "expense", "non_field_errors"),
    ("start", 42, "non_field_errors"),
    ("start", True, "non_field_errors"),
    ("start", None, "non_field_errors"),
    ("start", {}, "workflow"),
    ("start", {"workflow": ["expense"]}, "workflow"),
    ("start", {"workflow": {"name": "expense"}}, "workflow"),
    ("start", {"workflow": None}, "workflow"),
    ("start", {"workflow": 7}, "workflow"),  # "7": no such workflow
    ("start", {"workflow": "expense", "data": [1, 2]}, "data"),
    ("start", {"workflow": "expense", "data": "amount=5"}, "data"),
    ("start", {"workflow": "expense", "data": 5}, "data"),
    ("start", {"workflow": "expense", "data": None}, "data"),
    ("start", {"workflow": "expense", "data": True}, "data"),
    ("start", {"workflow": "expense", "version": 1}, "version"),  # "1": no such version
    ("start", {"workflow": "expense", "version": 1.0}, "version"),
    ("start", {"workflow": "expense", "version": ["1.0.0"]}, "version"),
    ("start", {"workflow": "expense", "version": {"v": "1.0.0"}}, "version"),
    ("start", {"workflow": "expense", "version": True}, "version"),
    ("start", {"workflow": "expense", "business_key": {"id": 1}}, "business_key"),
    ("start", {"workflow": "expense", "business_key": ["k"]}, "business_key"),
    ("start", {"workflow": "expense", "business_key": False}, "business_key"),
    ("start", {"workflow": "expense", "business_key": "k" * 201}, "business_key"),
    ("cancel", [], "non_field_errors"),
    ("cancel", "stop", "non_field_errors"),
    ("cancel", {"reason": ["why"]}, "reason"),
    ("cancel", {"reason": {"why": 1}}, "reason"),
    ("cancel", {"reason": None}, "reason"),
    ("cancel", {"reason": True}, "reason"),
    ("cancel", {"reason": "r" * 1001}, "reason"),
    ("retry", [1], "non_field_errors"),
    ("retry", {"from_step": 5}, "from_step"),  # "5": no such step
    ("retry", {"from_step": ["start"]}, "from_step"),
    ("retry", {"from_step": {"step": "start"}}, "from_step"),
    ("retry", {"from_step": None}, "from_step"),
    ("retry", {"from_step": False}, "from_step"),
    ("complete", ["approved"], "non_field_errors"),
    ("complete", 3.5, "non_field_errors"),
    ("complete", {"data": [True]}, "data"),
    ("complete", {"data": "approved"}, "data"),
    ("complete", {"data": 1}, "data"),
    ("complete", {"data": None}, "data"),
    ("complete", {"data": {"amount_approved": "lots"}}, "amount_approved"),
    ("complete", {"data": {"amount_approved": -1}}, "amount_approved"),
    ("complete", {"action": ["Approve"]}, "action"),
    ("complete", {"action": {"Approve": True}}, "action"),
    ("complete", {"action": 1}, "action"),  # "1": the step has no such action
    ("complete", {"action": True}, "action"),
    ("complete", {"action": ""}, "action"),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "field"), WRONG_TYPES, ids=[f"{e}-{f}" for e, _, f in WRONG_TYPES]
)
def test_wrong_types_are_a_400_naming_the_field_and_change_nothing(
    world, people, endpoint, body, field
):
    before = snapshot()

    response = post_json(api(people.root), urls(world)[endpoint], body)

    error = json_error(response, 400, "invalid")
    assert field in error["errors"], error
    assert snapshot() == before


# -- sizes ----------------------------------------------------------------------------------


def test_a_start_with_more_than_the_context_limit_is_a_400_naming_the_limit(world, people):
    before = snapshot()
    data = {"amount": 5, "blob": "a" * int(1.1 * MIB)}

    response = post_json(api(people.root), f"{API}/instances/", {"workflow": "note", "data": data})

    error = json_error(response, 400, "invalid")
    (message,) = error["errors"]["data"]
    assert LIMIT_TEXT in message and "MAX_CONTEXT_BYTES" in message, message
    assert snapshot() == before


def test_a_completion_pushing_the_context_over_the_limit_is_a_400_and_the_task_stays_open(
    hostile_engine, people
):
    instance = hostile_engine.start_workflow("note", initial_data={"blob": "a" * (600 * 1024)})
    task = instance.human_tasks.get()
    before = snapshot()

    response = post_json(
        api(people.manager),
        f"{API}/tasks/{task.pk}/complete/",
        {"data": {"more": "b" * (600 * 1024)}},
    )

    error = json_error(response, 400, "invalid")
    assert LIMIT_TEXT in error["detail"] and "MAX_CONTEXT_BYTES" in error["detail"], error
    assert snapshot() == before
    task.refresh_from_db()
    assert task.status == "open"
    assert WorkflowInstance.objects.get(pk=instance.pk).status == WorkflowStatus.WAITING


def test_the_same_completion_under_the_limit_goes_through(hostile_engine, people):
    """The counterpart of the test above: the limit, not the size of the body, refused it."""
    instance = hostile_engine.start_workflow("note", initial_data={"blob": "a" * (600 * 1024)})
    task = instance.human_tasks.get()

    response = post_json(
        api(people.manager),
        f"{API}/tasks/{task.pk}/complete/",
        {"data": {"more": "b" * (300 * 1024)}},
    )

    assert response.status_code == 200, response.content[:300]
    assert response.json()["status"] == "completed"


def _over_upload_limit(settings):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert limit is not None
    return {"workflow": "note", "data": {"blob": "a" * (limit + MIB)}}


@pytest.mark.parametrize("endpoint", ["start", "complete"])
def test_a_body_over_django_upload_limit_is_refused_without_a_server_error(
    world, people, settings, endpoint
):
    before = snapshot()

    response = post_json(api(people.root), urls(world)[endpoint], _over_upload_limit(settings))

    assert response.status_code in (400, 413), response.status_code
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ["start", "complete"])
def test_a_body_over_django_upload_limit_gets_a_json_error(world, people, settings, endpoint):
    response = post_json(api(people.root), urls(world)[endpoint], _over_upload_limit(settings))

    assert response.status_code in (400, 413)
    assert response["Content-Type"] == "application/json", response.content[:200]


# -- unknown and malformed ids ------------------------------------------------------------------

BAD_INSTANCE_IDS = [
    str(uuid.UUID(int=0)),
    "4" * 32,  # a UUID without dashes, of no instance
    "not-a-uuid",
    "9" * 40,
    "-1",
    "ünïcødé",
    "💥",
    "%00",
    "x" * 2000,
    "%27%20OR%201=1--",
    "null",
]
BAD_TASK_IDS = [
    "0",
    "-1",
    "9" * 18,  # a bigint of no task
    "9" * 40,  # more than a bigint
    "٩٨٧٦٥٤٣٢١",  # Arabic-Indic digits: int() reads 987654321
    "1e9",
    "0x1f",
    "1.5",
    "ünï",
    "%00",
    "x" * 2000,
    "null",
]


@pytest.mark.parametrize("ident", BAD_INSTANCE_IDS, ids=range(len(BAD_INSTANCE_IDS)))
@pytest.mark.parametrize("action", ["", "cancel/", "retry/"])
def test_unknown_and_malformed_instance_ids_are_a_json_404(world, people, ident, action):
    client = api(people.root)
    before = snapshot()

    url = f"{API}/instances/{ident}/{action}"
    response = client.post(url, {}, format="json") if action else client.get(url)

    json_error(response, 404, "not_found")
    assert snapshot() == before


@pytest.mark.parametrize("ident", BAD_TASK_IDS, ids=range(len(BAD_TASK_IDS)))
@pytest.mark.parametrize("action", ["", "claim/", "unclaim/", "complete/"])
def test_unknown_and_malformed_task_ids_are_a_json_404(world, people, ident, action):
    client = api(people.root)
    before = snapshot()

    url = f"{API}/tasks/{ident}/{action}"
    response = client.post(url, {}, format="json") if action else client.get(url)

    json_error(response, 404, "not_found")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workflow": "nope"}, "workflow"),
        ({"workflow": "ünïcødé 💥"}, "workflow"),
        ({"workflow": "x" * 201}, "workflow"),
        ({"workflow": "%s%s%n"}, "workflow"),
        ({"workflow": "expense", "version": "9.9.9"}, "version"),
        ({"workflow": "expense", "version": "1.0.0.0"}, "version"),
        ({"workflow": "expense", "version": "1.0.0\u200b"}, "version"),
        ({"workflow": "expense", "version": "v" * 51}, "version"),
    ],
)
def test_unknown_workflows_and_versions_are_a_400_naming_the_field(world, people, body, field):
    before = snapshot()

    response = post_json(api(people.root), f"{API}/instances/", body)

    assert field in json_error(response, 400, "invalid")["errors"]
    assert snapshot() == before


@pytest.mark.parametrize(
    "step", ["nope", "ünï", "bo om", "BOOM", "boom\u200b", "x" * 200, "__init__"]
)
def test_retry_from_an_unknown_step_is_a_400_and_the_instance_stays_failed(world, people, step):
    before = snapshot()

    response = post_json(api(people.root), urls(world)["retry"], {"from_step": step})

    assert "from_step" in json_error(response, 400, "invalid")["errors"]
    assert snapshot() == before
    assert WorkflowInstance.objects.get(pk=world.failed.pk).status == WorkflowStatus.FAILED


@pytest.mark.parametrize("name", ["nope", "%00", "ünï", "x" * 3000, "..", "expense%00"])
def test_unknown_definitions_are_a_json_404(world, people, name):
    json_error(api(people.root).get(f"{API}/definitions/{name}/"), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "started_by=ünï",
        "started_after=9999-99-99",
        "started_before=99999-01-01",
        "status=%00",
        "workflow=%00",
        "status=all",
    ],
)
def test_bad_instance_filters_are_a_400(world, people, query):
    json_error(api(people.root).get(f"{API}/instances/?{query}"), 400, "invalid")


@pytest.mark.parametrize(
    "query", ["instance=not-a-uuid", "instance=9999", "instance=%00", "all=maybe", "status=x"]
)
def test_bad_task_filters_are_a_400(world, people, query):
    json_error(api(people.root).get(f"{API}/tasks/?{query}"), 400, "invalid")


def test_a_huge_started_by_filter_is_not_a_server_error(world, people):
    response = api(people.root).get(f"{API}/instances/?started_by={'9' * 30}")

    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200:
        assert response.json()["count"] == 0


# -- values JSON cannot hold ------------------------------------------------------------------

NOT_JSON = [
    '{"workflow": "note", "data": {"a": NaN}}',
    '{"workflow": "note", "data": {"a": Infinity}}',
    '{"workflow": "note", "data": {"a": -Infinity}}',
    '{"workflow": "note", "data": {"a": [1, {"b": NaN}]}}',
    '{"workflow": "note", "data": {"a": ' + "9" * 5000 + "}}",  # over int's digit limit
]


@pytest.mark.parametrize("body", NOT_JSON, ids=range(len(NOT_JSON)))
def test_nan_infinity_and_endless_integers_are_a_400_parse_error(world, people, body):
    before = snapshot()

    response = post_raw(api(people.root), f"{API}/instances/", body)

    json_error(response, 400, "parse_error")
    assert snapshot() == before


@pytest.mark.parametrize(
    "body", ['{"data": {"a": NaN}}', '{"data": {"approved": Infinity}}', '{"action": NaN}']
)
def test_nan_in_a_completion_is_a_400_and_the_task_stays_open(world, people, body):
    before = snapshot()

    response = post_raw(api(people.root), urls(world)["complete"], body)

    json_error(response, 400, "parse_error")
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ["start", "complete"])
def test_a_float_overflowing_to_infinity_is_a_400(hostile_engine, people, endpoint):
    """``1e999`` is valid JSON that Python reads as ``inf``: the context check refuses it."""
    instance = hostile_engine.start_workflow("note")
    url = {
        "start": f"{API}/instances/",
        "complete": f"{API}/tasks/{instance.human_tasks.get().pk}/complete/",
    }[endpoint]
    before = snapshot()

    response = post_raw(api(people.root), url, '{"workflow": "note", "data": {"a": 1e999}}')

    assert "not JSON-serializable" in json_error(response, 400, "invalid")["detail"]
    assert snapshot() == before


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("endpoint", ["start", "complete"])
def test_json_nested_too_deep_to_parse_is_a_400(world, people, endpoint):
    before = snapshot()
    body = '{"workflow": "note", "data": {"deep": ' + _deep(100_000) + "}}"

    response = post_raw(api(people.root), urls(world)[endpoint], body)

    json_error(response, 400)
    assert snapshot() == before


def test_a_deeply_nested_context_is_refused_or_runs_but_never_a_500(world, people):
    before = snapshot()
    body = '{"workflow": "boom", "data": {"deep": ' + _deep(600) + "}}"

    response = post_raw(api(people.root), f"{API}/instances/", body)

    assert response.status_code in (201, 400), response.status_code
    if response.status_code == 400:
        assert snapshot() == before
    else:
        assert response.json()["status"] == "failed"  # the boom step, not a stuck RUNNING


SURROGATES = [
    ("start", '{"workflow": "note", "data": {"text": "\\ud800"}}'),
    ("start", '{"workflow": "note", "data": {"\\udfff": 1}}'),
    ("start", '{"workflow": "note", "data": {"list": ["ok", "\\udc00"]}}'),
    ("complete", '{"data": {"comments": "\\ud83d"}}'),
]


@pytest.mark.parametrize(("endpoint", "body"), SURROGATES, ids=range(len(SURROGATES)))
def test_lone_surrogates_in_data_are_a_400_and_change_nothing(world, people, endpoint, body):
    before = snapshot()

    response = post_raw(api(people.root), urls(world)[endpoint], body)

    json_error(response, 400, "invalid")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("endpoint", "body", "field"),
    [
        ("start", '{"workflow": "note", "business_key": "\\ud800"}', "business_key"),
        ("start", '{"workflow": "\\ud800"}', "workflow"),
        ("cancel", '{"reason": "\\udfff"}', "reason"),
        ("retry", '{"from_step": "\\ud800"}', "from_step"),
        ("complete", '{"action": "\\ud800"}', "action"),
        ("start", '{"workflow": "note", "data": {"a": "\\u0000"}}', "data"),
        ("start", '{"workflow": "note", "data": {"\\u0000": 1}}', "data"),
        ("start", '{"workflow": "note", "business_key": "a\\u0000"}', "business_key"),
        ("complete", '{"data": {"comments": "\\u0000"}}', "data"),
    ],
)
def test_surrogates_and_nul_in_text_fields_are_a_400(world, people, endpoint, body, field):
    before = snapshot()

    response = post_raw(api(people.root), urls(world)[endpoint], body)

    assert field in json_error(response, 400, "invalid")["errors"]
    assert snapshot() == before


# -- conditions -----------------------------------------------------------------------------

ESCAPES = [
    "context.__class__",
    "context.get('a').__class__.__mro__",
    "().__class__.__bases__[0].__subclasses__()",
    "__import__('os').system('id')",
    "__builtins__",
    "open('/etc/passwd').read()",
    "eval('1')",
    "exec('import os')",
    "getattr(context, 'get')",
    "globals()",
    "type(context)",
    "context.get('a').upper()",
    "context['a']",
    "context",
    "(lambda: 1)()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "f'{context}'",
    "(x := 1)",
    "1 if True else __import__('os')",
    "context.get(*['a'])",
    "context.get(key='a')",
    "str.join",
    "1 << 10000",
    "~0",
    "'\x00'",
    "1" + "0" * 1300,  # an integer literal of more than 4096 bits
    "-" * 100 + "1",  # nested too deeply
    "not " * 100 + "True",
    "[" * 60 + "]" * 60,
    "(" * 300 + "1" + ")" * 300,
    "1+" * 1000 + "1",  # too long
    "context.get('a') == " + " + ".join(["1"] * 700),
]


@pytest.mark.parametrize("condition", ESCAPES, ids=range(len(ESCAPES)))
def test_conditions_that_try_to_escape_are_refused_at_registration(condition):
    registry = WorkflowRegistry()
    definition = WorkflowDefinition(
        name="escape",
        version="1",
        initial_step="a",
        steps={"a": Done(), "b": Done()},
        edges=[Edge("a", "b", condition=condition)],
    )

    (outcome, seconds) = within(10, lambda: registry.register_definition(definition))

    error = outcome.get("error")
    assert isinstance(error, ConditionError), outcome
    assert isinstance(error, DefinitionError)
    assert "edge a -> b" in str(error)  # the message names the edge
    assert not registry.has_definition("escape")
    assert seconds < 5


@pytest.mark.parametrize("condition", ["10 ** 10 ** 10 > 0", "len('a' * 10 ** 9) > 0"])
def test_conditions_with_constant_blowups_are_refused_at_registration(condition):
    definition = WorkflowDefinition(
        name="constant",
        version="1",
        initial_step="a",
        steps={"a": Done(), "b": Done()},
        edges=[Edge("a", "b", condition=condition)],
    )

    with pytest.raises(ConditionError):
        WorkflowRegistry().register_definition(definition)


@pytest.mark.parametrize("name", list(BLOWUPS))
def test_a_condition_that_blows_up_at_evaluation_fails_the_instance_quickly(hostile_engine, name):
    condition, data, words = BLOWUPS[name]
    # First the evaluator alone, in a thread with a deadline: it must not hang.
    outcome, _ = within(10, lambda: compile_condition(condition)(dict(data)))
    assert isinstance(outcome.get("error"), ConditionEvaluationError), outcome

    started = time.monotonic()
    instance = hostile_engine.start_workflow(name, initial_data=data)
    elapsed = time.monotonic() - started

    assert elapsed < 5
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "start"
    assert words in instance.error and condition[:20] in instance.error, instance.error
    assert instance.context == data  # kept for debugging and retry
    runs = dict(StepRun.objects.filter(instance=instance).values_list("step_name", "status"))
    assert runs == {"start": "failed"}  # neither branch started


def test_a_condition_blowup_through_the_api_is_a_201_with_the_failed_instance(
    hostile_engine, people
):
    response = post_json(
        api(people.root), f"{API}/instances/", {"workflow": "power", "data": {"n": 10**9}}
    )

    assert response.status_code == 201, response.content[:300]
    body = response.json()
    assert body["status"] == "failed"
    assert "exponent exceeds 100" in body["error"]


# -- who may ----------------------------------------------------------------------------------


@pytest.fixture
def assigned(hostile_engine, people):
    """A note task assigned to ``other_manager``; ``manager`` is in its candidate group."""
    instance = hostile_engine.start_workflow(
        "note", initial_data={"assignee": people.other_manager.pk}, started_by=people.starter
    )
    return instance.human_tasks.get()


@pytest.mark.parametrize("who", ["manager", "starter", "viewer"])
def test_completing_a_task_assigned_to_someone_else_is_403_via_the_api(people, assigned, who):
    before = snapshot()

    response = post_json(
        api(getattr(people, who)), f"{API}/tasks/{assigned.pk}/complete/", {"data": {"ok": 1}}
    )

    json_error(response, 403, "permission_denied")
    assert snapshot() == before


@pytest.mark.parametrize("who", ["outsider", "staff"])  # staff status shows nothing
def test_a_task_of_an_instance_one_cannot_see_is_404_not_403(people, assigned, who):
    before = snapshot()

    response = post_json(api(getattr(people, who)), f"{API}/tasks/{assigned.pk}/complete/", {})

    json_error(response, 404, "not_found")
    assert snapshot() == before


def test_a_task_claimed_by_someone_else_is_403(world, people, hostile_engine):
    hostile_engine.claim_task(world.task.pk, people.other_manager)
    before = snapshot()

    response = post_json(api(people.manager), urls(world)["complete"], {"data": {"approved": True}})

    json_error(response, 403, "permission_denied")
    assert snapshot() == before


def test_the_assignee_may_complete_it(people, assigned):
    """The counterpart: the same request by the assignee goes through."""
    response = post_json(
        api(people.other_manager), f"{API}/tasks/{assigned.pk}/complete/", {"data": {"ok": 1}}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "completed"


def admin_task_url(task):
    return reverse("admin:django_workflows_humantask_complete", args=[task.pk])


@pytest.mark.parametrize("who", ["manager", "viewer", "staff"])
def test_completing_a_task_assigned_to_someone_else_is_refused_in_the_admin(
    client, people, assigned, who
):
    client.force_login(getattr(people, who))
    before = snapshot()

    page = client.get(admin_task_url(assigned))
    response = client.post(admin_task_url(assigned), {"_complete": "1", "ok": "1"})

    assert response.status_code == 403
    assert page.status_code in (200, 403)
    if page.status_code == 200:  # may look at it, not complete it
        assert 'id="dwf-complete-form"' not in page.content.decode()
    assert snapshot() == before


def test_a_user_outside_the_admin_is_sent_to_the_login_page(client, people, assigned):
    client.force_login(people.starter)  # not staff
    before = snapshot()

    response = client.post(admin_task_url(assigned), {"_complete": "1"})

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
    assert snapshot() == before


# -- authentication and CSRF -------------------------------------------------------------------

POSTS = ["start", "cancel", "retry", "complete"]
BODIES = {
    "start": {"workflow": "note"},
    "cancel": {"reason": "no"},
    "retry": {},
    "complete": {"data": {"approved": True}},
}


@pytest.mark.parametrize("endpoint", [*POSTS, "claim"])
def test_requests_without_credentials_are_401_and_change_nothing(world, endpoint):
    url = urls(world).get(endpoint) or f"{API}/tasks/{world.task.pk}/claim/"
    before = snapshot()

    response = post_json(api(), url, BODIES.get(endpoint, {}))

    json_error(response, 401, "not_authenticated")
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", POSTS)
def test_a_bad_token_is_401(world, endpoint):
    client = api()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    before = snapshot()

    response = post_json(client, urls(world)[endpoint], BODIES[endpoint])

    json_error(response, 401, "authentication_failed")
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", [*POSTS, "claim"])
def test_session_posts_without_a_csrf_token_are_403(world, people, endpoint):
    url = urls(world).get(endpoint) or f"{API}/tasks/{world.task.pk}/claim/"
    client = api(people.root, csrf=True)
    before = snapshot()

    response = post_json(client, url, BODIES.get(endpoint, {}))

    assert "CSRF" in json_error(response, 403, "permission_denied")["detail"]
    assert snapshot() == before


def test_with_the_csrf_token_the_same_session_post_goes_through(world, people):
    client = api(people.root, csrf=True)
    secret = "a" * 32
    client.cookies["csrftoken"] = secret

    response = post_json(
        client, urls(world)["complete"], {"data": {"approved": False}}, HTTP_X_CSRFTOKEN=secret
    )

    assert response.status_code == 200, response.content[:300]


def test_a_token_needs_no_csrf_token(world, people):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=people.root).key}")

    response = post_json(client, urls(world)["cancel"], {"reason": "by token"})

    assert response.status_code == 200


def test_admin_posts_without_a_csrf_token_are_403(world, people):
    client = Client(enforce_csrf_checks=True)
    client.force_login(people.manager)
    before = snapshot()

    response = client.post(admin_task_url(world.task), {"approved": "on", "_complete": "1"})

    assert response.status_code == 403
    assert snapshot() == before


# -- HTML in values, titles and errors ---------------------------------------------------------


@pytest.fixture
def marked_up(hostile_engine, people):
    """A note instance whose context, business key and task title are a script; a failed
    instance whose error message is one."""
    waiting = hostile_engine.start_workflow(
        "note",
        initial_data={"title": EVIL, "note": EVIL, EVIL: "key"},
        business_key=EVIL,
        started_by=people.starter,
    )
    failed = hostile_engine.start_workflow("boom", initial_data={"message": EVIL})
    assert failed.status == WorkflowStatus.FAILED and EVIL in failed.error
    return SimpleNamespace(waiting=waiting, task=waiting.human_tasks.get(), failed=failed)


def assert_escaped(response):
    assert response.status_code == 200
    html = response.content.decode()
    assert EVIL not in html
    assert ESCAPED in html
    return html


def test_the_admin_instance_page_escapes_context_title_and_business_key(client, people, marked_up):
    client.force_login(people.root)
    url = reverse("admin:django_workflows_workflowinstance_change", args=[marked_up.waiting.pk])

    html = assert_escaped(client.get(url))

    assert marked_up.task.title == EVIL
    assert html.count(ESCAPED) >= 3  # context, business key, the open task's title


def test_the_admin_instance_page_escapes_error_messages(client, people, marked_up):
    client.force_login(people.root)
    url = reverse("admin:django_workflows_workflowinstance_change", args=[marked_up.failed.pk])

    html = assert_escaped(client.get(url))

    assert f"RuntimeError: {ESCAPED}" in html  # the instance's error and the step run's


def test_the_admin_task_pages_escape_the_title_and_context(client, people, marked_up):
    client.force_login(people.manager)

    assert_escaped(client.get(admin_task_url(marked_up.task)))
    assert_escaped(client.get(reverse("admin:django_workflows_humantask_inbox")))
    response = client.post(admin_task_url(marked_up.task), {"_complete": "1"}, follow=True)
    assert_escaped(response)  # the message "Task ... is completed"
    assert HumanTask.objects.get(pk=marked_up.task.pk).status == "completed"


def test_the_admin_instance_list_escapes_business_keys(client, people, marked_up):
    client.force_login(people.root)

    assert_escaped(client.get(reverse("admin:django_workflows_workflowinstance_changelist")))


def test_the_admin_task_list_escapes_titles(client, people, marked_up):
    client.force_login(people.root)

    assert_escaped(client.get(reverse("admin:django_workflows_humantask_changelist")))


def test_the_api_returns_markup_as_plain_json_strings(people, marked_up):
    client = api(people.root)

    detail = client.get(f"{API}/instances/{marked_up.waiting.pk}/")
    task = client.get(f"{API}/tasks/{marked_up.task.pk}/")
    failed = client.get(f"{API}/instances/{marked_up.failed.pk}/")

    for response in (detail, task, failed):
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert b"&lt;" not in response.content  # not HTML-escaped: JSON
    assert detail.json()["context"] == {"title": EVIL, "note": EVIL, EVIL: "key"}
    assert detail.json()["business_key"] == EVIL
    assert detail.json()["open_tasks"][0]["title"] == EVIL
    assert task.json()["title"] == EVIL
    assert failed.json()["error"] == f"RuntimeError: {EVIL}"
    assert failed.json()["step_runs"][-1]["error"] == f"RuntimeError: {EVIL}"


def test_the_browsable_api_escapes_markup(people, marked_up):
    client = api(people.root)

    response = client.get(f"{API}/instances/{marked_up.waiting.pk}/", HTTP_ACCEPT="text/html")

    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text


def test_errors_quoting_markup_are_json(world, people):
    response = post_json(api(people.root), f"{API}/instances/", {"workflow": EVIL})

    error = json_error(response, 400, "invalid")
    assert EVIL in error["errors"]["workflow"][0]


# -- random JSON bodies (Hypothesis) -------------------------------------------------------------

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _objects(fields):
    """JSON objects with the endpoint's fields: plausible values (which mostly go through),
    plausible or random values, or random keys."""
    return st.one_of(
        st.fixed_dictionaries({}, optional=fields),
        st.fixed_dictionaries(
            {}, optional={name: st.one_of(values, json_values) for name, values in fields.items()}
        ),
        st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    )


_data = st.dictionaries(
    st.sampled_from(["amount", "approved", "comments", "amount_approved", "n", "title"])
    | st.text(max_size=8),
    json_values,
    max_size=4,
)
_FIELDS = {
    "start": {
        "workflow": st.sampled_from(["expense", "note", "boom", "power", "timer", "nope", ""]),
        "version": st.sampled_from(["1", "1.0.0", "2", ""]),
        "data": _data,
        "business_key": st.text(max_size=20),
    },
    "complete": {"data": _data, "action": st.sampled_from(["Approve", "Reject", ""])},
    "cancel": {"reason": st.text(max_size=30)},
    "retry": {"from_step": st.sampled_from(["start", "boom", "nope", ""])},
}


def _bodies(endpoint):
    """Request bodies: JSON objects for the endpoint, any JSON, text, or bytes."""
    return st.one_of(
        _objects(_FIELDS[endpoint]).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=40),
        st.binary(max_size=40),
    )


@pytest.mark.parametrize("endpoint", ["start", "complete", "cancel", "retry"])
def test_random_json_bodies_never_cause_a_server_error(world, people, endpoint):
    client = api(people.root)
    url = urls(world)[endpoint]
    seen = Counter()

    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(body=_bodies(endpoint))
    def check(body):
        savepoint = transaction.savepoint()  # every example starts from the same rows
        try:
            before = snapshot()
            response = post_raw(client, url, body)
            seen[response.status_code] += 1
            assert response.status_code in ALLOWED, (response.status_code, response.content[:500])
            assert response["Content-Type"] == "application/json"
            if response.status_code >= 400:
                assert set(response.json()) >= {"detail", "code"}
                assert snapshot() == before, response.json()
        finally:
            transaction.savepoint_rollback(savepoint)

    check()
    # The bodies reached both sides: some were refused, some went through.
    assert any(code < 300 for code in seen) and any(code >= 400 for code in seen), seen
