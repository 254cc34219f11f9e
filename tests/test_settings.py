"""The DJANGO_WORKFLOWS setting: defaults, overrides, validation, and the default engine."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_workflows import (
    EventBus,
    InMemoryEventBus,
    LocalExecutionEngine,
    RetryPolicy,
    WorkflowStatus,
    get_engine,
    registry,
)
from django_workflows.conf import DEFAULTS, workflow_settings

from . import workflows
from .workflows import Record


class RecordingBus(EventBus):
    """Named by dotted path in DJANGO_WORKFLOWS["EVENT_BUS"]."""

    def __init__(self):
        self.events = []

    def emit(self, event):
        self.events.append(event)


class CustomEngine(LocalExecutionEngine):
    """Named by dotted path in DJANGO_WORKFLOWS["ENGINE"]."""


@override_settings(DJANGO_WORKFLOWS={})  # the test project sets the backends' keys
def test_defaults_round_trip():
    for key, default in DEFAULTS.items():
        value = getattr(workflow_settings, key)
        if key == "ENGINE":
            assert value is LocalExecutionEngine
        else:
            assert value == default, key
    assert workflow_settings.EVENT_BUS is None
    assert workflow_settings.AUTODISCOVER is True


@pytest.mark.parametrize("value", [{}, None])
def test_empty_setting_means_defaults(value):
    with override_settings(DJANGO_WORKFLOWS=value):
        lease = DEFAULTS["LEASE_SECONDS"]
        assert lease == workflow_settings.LEASE_SECONDS
        assert workflow_settings.ENGINE is LocalExecutionEngine


def test_override_settings_changes_values_and_restores_them():
    lease, attempts = DEFAULTS["LEASE_SECONDS"], DEFAULTS["DEFAULT_MAX_ATTEMPTS"]
    assert lease == workflow_settings.LEASE_SECONDS  # now cached

    with override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": 7, "DEFAULT_STEP_TIMEOUT": 1.5}):
        assert workflow_settings.LEASE_SECONDS == 7
        assert workflow_settings.DEFAULT_STEP_TIMEOUT == 1.5
        assert attempts == workflow_settings.DEFAULT_MAX_ATTEMPTS

    assert lease == workflow_settings.LEASE_SECONDS
    assert workflow_settings.DEFAULT_STEP_TIMEOUT is None


def test_unknown_key_raises_improperly_configured():
    with (
        override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": 5, "LEASE_SECOND": 5}),
        pytest.raises(ImproperlyConfigured, match="unknown keys: LEASE_SECOND;") as excinfo,
    ):
        workflow_settings.LEASE_SECONDS  # noqa: B018
    assert "LEASE_SECONDS" in str(excinfo.value)  # the known keys are listed


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="invalid DJANGO_WORKFLOWS key 'NOPE'"):
        workflow_settings.NOPE  # noqa: B018


def test_unimportable_dotted_path_raises_improperly_configured():
    with (
        override_settings(DJANGO_WORKFLOWS={"ENGINE": "no.such.Engine"}),
        pytest.raises(ImproperlyConfigured, match=r"DJANGO_WORKFLOWS\['ENGINE'\] = 'no.such"),
    ):
        workflow_settings.ENGINE  # noqa: B018


# -- the default engine ------------------------------------------------------------------------


def test_get_engine_returns_one_local_engine_on_the_project_registry():
    engine = get_engine()

    assert type(engine) is LocalExecutionEngine
    assert engine.registry is registry
    assert engine.event_bus is None
    assert get_engine() is engine


def test_setting_changes_reset_the_default_engine():
    before = get_engine()

    with override_settings(DJANGO_WORKFLOWS={"ENGINE": "tests.test_settings.CustomEngine"}):
        during = get_engine()
        assert type(during) is CustomEngine
        assert get_engine() is during

    after = get_engine()
    assert type(after) is LocalExecutionEngine
    assert after is not before  # rebuilt from the restored settings
    assert after is not during


def test_engine_class_objects_are_accepted_as_well_as_dotted_paths():
    with override_settings(DJANGO_WORKFLOWS={"ENGINE": CustomEngine}):
        assert workflow_settings.ENGINE is CustomEngine
        assert isinstance(get_engine(), CustomEngine)


@pytest.mark.django_db
def test_event_bus_dotted_path_is_used_by_new_engines(
    wf_registry, django_capture_on_commit_callbacks
):
    with override_settings(DJANGO_WORKFLOWS={"EVENT_BUS": "tests.test_settings.RecordingBus"}):
        assert workflow_settings.EVENT_BUS is RecordingBus
        engine = LocalExecutionEngine(wf_registry)
        assert isinstance(engine.event_bus, RecordingBus)
        assert isinstance(get_engine().event_bus, RecordingBus)
        # An explicit bus wins over the setting.
        explicit = InMemoryEventBus()
        assert LocalExecutionEngine(wf_registry, event_bus=explicit).event_bus is explicit

        with django_capture_on_commit_callbacks(execute=True):
            instance = engine.start_workflow("timer")

    assert instance.status == WorkflowStatus.WAITING
    types = [event.type for event in engine.event_bus.events]
    assert types[0] == "WorkflowStarted"
    assert "StepExecuted" in types
    assert {event.instance_id for event in engine.event_bus.events} == {str(instance.id)}
    assert LocalExecutionEngine(wf_registry).event_bus is None  # setting restored


def test_default_retry_policy_comes_from_the_settings(engine):
    own = RetryPolicy(max_attempts=5)
    with override_settings(
        DJANGO_WORKFLOWS={
            "DEFAULT_MAX_ATTEMPTS": 3,
            "DEFAULT_RETRY_BACKOFF": 2.5,
            "DEFAULT_RETRY_BACKOFF_FACTOR": 3.0,
            "DEFAULT_RETRY_MAX_BACKOFF": 60.0,
        }
    ):
        assert engine.retry_policy(Record()) == RetryPolicy(
            max_attempts=3, backoff=2.5, backoff_factor=3.0, max_backoff=60.0
        )
        assert engine.retry_policy(Record(retry=own)) is own

    assert engine.retry_policy(Record()) == RetryPolicy()


@pytest.mark.django_db
def test_default_max_attempts_applies_to_steps_without_a_policy(engine, manager):
    with override_settings(DJANGO_WORKFLOWS={"DEFAULT_MAX_ATTEMPTS": 2}):
        instance = engine.start_workflow("expense", initial_data={"amount": 1})
        instance = engine.complete_human_task(
            instance.id, "manager_approval", manager.pk, {"approved": True}
        )

    assert instance.status == WorkflowStatus.FAILED
    assert [step for _, step in workflows.calls].count("process_payment") == 2
    run = instance.step_runs.get(step_name="process_payment")
    assert (run.attempt, run.max_attempts) == (2, 2)
