"""Fixtures of the admin tests: an engine on the admin test workflows, users by role."""

import pytest
from django.contrib.auth.models import Permission

import django_workflows.engine as engine_package
from django_workflows import LocalExecutionEngine
from django_workflows.models import HumanTask

from ..factories import GroupFactory, StaffFactory
from . import workflows


@pytest.fixture(autouse=True)
def admin_engine(monkeypatch):
    """``get_engine()`` (what the admin calls) returns an engine on the test workflows."""
    workflows.PAYMENT_DOWN["on"] = False
    engine = LocalExecutionEngine(workflows.build_registry())
    monkeypatch.setattr(engine_package, "_default", engine)
    return engine


def grant(user, *codenames):
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="django_workflows", codename__in=codenames
        )
    )
    return user


@pytest.fixture
def approver(managers):
    """A staff manager who may look at instances and tasks, not cancel or retry."""
    user = StaffFactory(username="approver", groups=[managers])
    return grant(user, "view_workflowinstance", "view_humantask")


@pytest.fixture
def other_manager(managers):
    return StaffFactory(username="other_manager", groups=[managers])


@pytest.fixture
def accountant(db):
    """Staff in another group, with every view permission: sees all, may complete none."""
    user = StaffFactory(username="accountant", groups=[GroupFactory(name="accountants")])
    return grant(user, "view_workflowinstance", "view_humantask", "view_definitionversion")


@pytest.fixture
def operator(db):
    """May cancel and retry instances (change permission), nothing more."""
    return grant(StaffFactory(username="operator"), "change_workflowinstance")


@pytest.fixture
def bare_staff(db):
    """Staff without any permission of the app."""
    return StaffFactory(username="bare")


@pytest.fixture
def start(admin_engine, managers):
    """Start a test workflow through the engine: ``start("approval", amount=10)``."""

    def start_(name, business_key="", started_by=None, **data):
        return admin_engine.start_workflow(
            name, initial_data=data, business_key=business_key, started_by=started_by
        )

    return start_


@pytest.fixture
def waiting(start):
    """An approval instance waiting for a manager, and its task."""
    instance = start("approval", business_key="EXP-1", amount=120)
    return instance, HumanTask.objects.get(instance=instance)


@pytest.fixture
def failed(start):
    """A payment instance failed at ``charge``."""
    workflows.PAYMENT_DOWN["on"] = True
    instance = start("payment", business_key="PAY-1", amount=50)
    workflows.PAYMENT_DOWN["on"] = False
    return instance
