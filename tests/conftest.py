import pytest
from django.db import connection

from django_workflows import InMemoryEventBus, LocalExecutionEngine, WorkflowRegistry

from . import workflows
from .factories import GroupFactory, StaffFactory, UserFactory
from .history import history_engine  # noqa: F401 (a fixture: tests/history.py)


def pytest_collection_modifyitems(config, items):
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # PBKDF2 is deliberately slow; the tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def _media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _media_root(settings, _media_dir):
    # Uploaded files (comment attachments) go to a temporary folder, not the checkout.
    settings.MEDIA_ROOT = str(_media_dir)


@pytest.fixture(autouse=True)
def _reset_calls():
    workflows.calls.clear()
    workflows.FAIL_SWITCH["on"] = True
    return


@pytest.fixture
def wf_registry():
    reg = WorkflowRegistry()
    for factory in (
        workflows.parallel_notifications,
        workflows.conditional_review,
        workflows.expense_approval,
        workflows.gateways,
        workflows.timer,
        workflows.rework_loop,
    ):
        reg.register_definition(factory())
    return reg


@pytest.fixture
def bus():
    return InMemoryEventBus()


@pytest.fixture
def engine(wf_registry, bus):
    return LocalExecutionEngine(wf_registry, event_bus=bus)


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def managers(db):
    return GroupFactory(name="managers")


@pytest.fixture
def manager(managers):
    return UserFactory(username="manager", groups=[managers])


@pytest.fixture
def outsider(db):
    """Not staff, in no group: holds nothing unless a test gives it something."""
    return UserFactory(username="outsider")


@pytest.fixture
def staff(db):
    return StaffFactory()
