import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import django_workflows.engine as engine_module
from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition

from ..factories import StaffFactory, UserFactory

API = "/api/workflows"


class Done(BaseMachineStep):
    def execute(self, context):
        context.set("done", True)


class Decide(BaseHumanStep):
    """A task for the user named in ``context['assignee']``, with buttons and a schema form."""

    title = "Decide"
    form_schema = {
        "type": "object",
        "properties": {"comment": {"type": "string", "maxLength": 10}},
    }
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}

    def get_assignee(self, context):
        return context.get("assignee")


def approval() -> WorkflowDefinition:
    """One human step assigned to a user, then one machine step."""
    return WorkflowDefinition(
        name="approval",
        version="1.0.0",
        description="A decision by one person.",
        initial_step="decide",
        steps={"decide": Decide(), "done": Done()},
        edges=[Edge("decide", "done")],
    )


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2 would take most of the time of these tests.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def api_engine(engine, wf_registry, monkeypatch):
    """The API's ``get_engine()`` returns the tests' engine, on the tests' registry."""
    wf_registry.register_definition(approval())
    monkeypatch.setattr(engine_module, "_default", engine)
    return engine


@pytest.fixture
def client_for(db):
    """An API client logged in (by session) as ``user``; anonymous without one."""

    def make(user=None):
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def token_client(db):
    """An API client authenticated by ``Authorization: Token ...`` as ``user``."""

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        return client

    return make


@pytest.fixture
def starter(db):
    return UserFactory(username="starter")


@pytest.fixture
def superuser(db):
    return StaffFactory(username="root", is_superuser=True)


@pytest.fixture
def expense(api_engine, starter, managers):
    """An expense instance started by ``starter``, waiting for a manager."""
    return api_engine.start_workflow("expense", initial_data={"amount": 5}, started_by=starter)


@pytest.fixture
def task(expense):
    return expense.human_tasks.get()
