"""System checks: E001 (settings that do not load), E002 (a stored graph that drifted),
W101 (the REST API routed without the rest_framework app), W102 (a form-less human
step without fields, the API routed)."""

import pytest
from django.conf import settings
from django.core.checks import ERROR, WARNING, run_checks
from django.test import override_settings

from django_workflows import (
    DefinitionError,
    Edge,
    LocalExecutionEngine,
    WorkflowDefinition,
    WorkflowStatus,
    registry,
)
from django_workflows.models import DefinitionVersion, HumanTask, WorkflowEvent, WorkflowInstance

from .workflows import ManagerApproval, Record

pytestmark = pytest.mark.django_db


def checks(check_id, **kwargs):
    return [message for message in run_checks(**kwargs) if message.id == check_id]


def drift_demo(changed=False) -> WorkflowDefinition:
    edges = [Edge("submit", "approve"), Edge("approve", "done")]
    if changed:
        edges.append(Edge("submit", "done"))
    return WorkflowDefinition(
        name="drift_demo",
        version="1.0.0",
        initial_step="submit",
        steps={"submit": Record(), "approve": ManagerApproval(), "done": Record()},
        edges=edges,
    )


@pytest.fixture
def on_project_registry():
    """Register drift_demo 1.0.0 on the project registry, and take it off afterwards."""
    try:
        yield registry.register_definition(drift_demo())
    finally:
        registry.unregister("drift_demo")


# -- E002 ----------------------------------------------------------------------------------


def test_no_e002_while_the_registered_graph_matches_the_stored_one(on_project_registry):
    LocalExecutionEngine().start_workflow("drift_demo")

    assert DefinitionVersion.objects.get(name="drift_demo").checksum == on_project_registry.checksum
    assert checks("django_workflows.E002", databases=["default"]) == []


def test_e002_when_code_changes_a_stored_version_without_a_new_number(on_project_registry):
    instance = LocalExecutionEngine().start_workflow("drift_demo")
    assert instance.status == WorkflowStatus.WAITING
    # The code of a later deploy: same name and version, another graph.
    registry.unregister("drift_demo", "1.0.0")
    registry.register_definition(drift_demo(changed=True))

    errors = checks("django_workflows.E002", databases=["default"])

    assert len(errors) == 1
    error = errors[0]
    assert error.level == ERROR
    assert error.obj == "drift_demo 1.0.0"
    assert "workflow drift_demo 1.0.0 differs from the graph stored for that version" in error.msg
    assert "give the changed graph a new version" in error.hint
    assert "Instances of 1.0.0 refuse to move" in error.hint


def test_e002_when_the_stored_checksum_differs(on_project_registry):
    LocalExecutionEngine().start_workflow("drift_demo")
    DefinitionVersion.objects.filter(name="drift_demo", version="1.0.0").update(checksum="0" * 64)

    errors = checks("django_workflows.E002", databases=["default"])

    assert [(e.id, e.obj) for e in errors] == [("django_workflows.E002", "drift_demo 1.0.0")]
    assert "new version" in errors[0].hint


def test_e002_only_runs_with_a_database(on_project_registry):
    LocalExecutionEngine().start_workflow("drift_demo")
    DefinitionVersion.objects.filter(name="drift_demo").update(checksum="0" * 64)

    # ``manage.py check`` without --database does not query the database.
    assert checks("django_workflows.E002") == []
    assert len(checks("django_workflows.E002", databases=["default"])) == 1


def test_no_e002_for_a_version_never_stored(on_project_registry):
    assert not DefinitionVersion.objects.filter(name="drift_demo").exists()
    assert checks("django_workflows.E002", databases=["default"]) == []


def test_no_e002_for_the_demo_workflows_once_stored():
    engine = LocalExecutionEngine()
    engine.start_workflow("order_fulfillment")
    engine.start_workflow("expense_approval", initial_data={"amount": 10})

    assert DefinitionVersion.objects.count() == 2
    assert checks("django_workflows.E002", databases=["default"]) == []


# -- E001 ----------------------------------------------------------------------------------


def test_no_e001_with_valid_settings():
    with override_settings(DJANGO_WORKFLOWS={"LEASE_SECONDS": 60}):
        assert checks("django_workflows.E001") == []
    assert checks("django_workflows.E001") == []


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"BOGUS": 1}, "DJANGO_WORKFLOWS has unknown keys: BOGUS"),
        ({"ENGINE": "no.such.Engine"}, "DJANGO_WORKFLOWS['ENGINE'] = 'no.such.Engine'"),
        ({"EVENT_BUS": "no.such.Bus"}, "DJANGO_WORKFLOWS['EVENT_BUS'] = 'no.such.Bus'"),
    ],
)
def test_e001_for_settings_that_do_not_load(value, text):
    with override_settings(DJANGO_WORKFLOWS=value):
        errors = checks("django_workflows.E001")

    assert len(errors) == 1
    assert errors[0].level == ERROR
    assert errors[0].obj == "settings.DJANGO_WORKFLOWS"
    assert text in errors[0].msg
    assert "settings reference" in errors[0].hint
    # Back to valid settings once the override ends.
    assert checks("django_workflows.E001") == []


# -- W101 ----------------------------------------------------------------------------------

WITHOUT_DRF_APP = [app for app in settings.INSTALLED_APPS if app != "rest_framework"]


def test_no_w101_with_the_rest_framework_app():
    assert checks("django_workflows.W101") == []


def test_w101_when_the_api_is_routed_without_the_rest_framework_app():
    with override_settings(INSTALLED_APPS=WITHOUT_DRF_APP):
        warnings = checks("django_workflows.W101")

    assert len(warnings) == 1
    warning = warnings[0]
    assert warning.level == WARNING
    assert warning.obj == "settings.INSTALLED_APPS"
    assert "REST API is routed (at 'api/workflows/')" in warning.msg
    assert "'rest_framework' is not in INSTALLED_APPS" in warning.msg
    assert "answers JSON only" in warning.msg
    assert "Add 'rest_framework' to INSTALLED_APPS" in warning.hint


def test_w101_for_a_projects_own_subclass_of_an_api_view():
    with override_settings(
        INSTALLED_APPS=WITHOUT_DRF_APP, ROOT_URLCONF="tests.api.urls_own_viewset"
    ):
        warnings = checks("django_workflows.W101")

    assert [w.id for w in warnings] == ["django_workflows.W101"]
    assert "(at 'v2/^instances/$')" in warnings[0].msg


def test_no_w101_when_the_api_is_not_routed():
    with override_settings(
        INSTALLED_APPS=WITHOUT_DRF_APP, ROOT_URLCONF="tests.api.urls_without_api"
    ):
        assert checks("django_workflows.W101") == []


# -- W102 ----------------------------------------------------------------------------------


@pytest.fixture
def formless():
    """A form-less human step on the project registry, with or without ``fields``."""
    from django_workflows import BaseHumanStep

    def register(**options):
        return registry.register_definition(
            WorkflowDefinition(
                name="formless_demo",
                version=str(len(registry.list_definitions(all_versions=True))),
                initial_step="ok",
                steps={"ok": BaseHumanStep(title="OK", **options)},
            )
        )

    try:
        yield register
    finally:
        registry.unregister("formless_demo")


def test_w102_names_a_formless_step_without_fields_when_the_api_is_routed(formless):
    assert checks("django_workflows.W102") == []  # the project's own steps say what they take
    definition = formless(actions={"OK": {"ok": True}})

    (warning,) = checks("django_workflows.W102")
    assert warning.level == WARNING
    assert warning.obj == f"formless_demo {definition.version}: ok"
    assert "human step 'ok' of workflow" in warning.msg
    assert "no form and declares no fields" in warning.msg
    assert "(at 'api/workflows/')" in warning.msg
    assert "fields = (...)" in warning.hint


def test_no_w102_with_fields_or_without_the_api(formless):
    formless(fields=())
    assert checks("django_workflows.W102") == []
    registry.unregister("formless_demo")
    formless()
    with override_settings(ROOT_URLCONF="tests.api.urls_without_api"):
        assert checks("django_workflows.W102") == []


# -- the engine refuses drifted graphs --------------------------------------------------------


def test_engine_refuses_to_move_an_instance_whose_stored_graph_differs(
    engine, wf_registry, manager
):
    instance = engine.start_workflow("expense", initial_data={"amount": 5})
    assert instance.status == WorkflowStatus.WAITING
    events = WorkflowEvent.objects.filter(instance=instance).count()
    DefinitionVersion.objects.filter(pk=instance.definition_id).update(checksum="0" * 64)

    with pytest.raises(DefinitionError, match="differs from the stored one"):
        engine.complete_human_task(instance.id, "manager_approval", manager.pk, {"approved": True})

    instance.refresh_from_db()
    assert instance.status == WorkflowStatus.WAITING
    assert instance.context == {"amount": 5, "submit_done": True}
    assert instance.current_steps == ["manager_approval"]
    task = HumanTask.objects.get(instance=instance)
    assert task.status == "open"
    assert task.completed_by is None
    assert WorkflowEvent.objects.filter(instance=instance).count() == events

    # Canceling runs no step code, so a drifted (or unregistered) graph does not block it.
    instance = engine.cancel_workflow(instance.id, reason="drift")
    assert instance.status == WorkflowStatus.CANCELED
    task.refresh_from_db()
    assert task.status == "canceled"


def test_engine_refuses_to_start_a_changed_graph_under_a_stored_version(engine, wf_registry):
    engine.start_workflow("review", initial_data={"score": 90})
    stored = DefinitionVersion.objects.get(name="review")
    changed = wf_registry.get_definition("review")
    wf_registry.unregister("review")
    changed = WorkflowDefinition(
        name="review",
        version="1.0.0",
        initial_step="review",
        steps=dict(changed.steps),
        edges=[
            Edge("review", "approve", condition="context.get('score') >= 50"),
            Edge("review", "reject", condition="context.get('score') < 50"),
            Edge("approve", "notify"),
            Edge("reject", "notify"),
        ],
    )
    wf_registry.register_definition(changed)

    with pytest.raises(DefinitionError, match="differs from the one stored for that version"):
        engine.start_workflow("review", initial_data={"score": 60})

    assert WorkflowInstance.objects.count() == 1
    stored.refresh_from_db()
    assert stored.checksum != changed.checksum  # the stored graph was not overwritten


# -- E004 ----------------------------------------------------------------------------------


def test_e004_for_a_sub_workflow_step_starting_an_unregistered_workflow():
    from django_workflows import SubWorkflowStep

    assert checks("django_workflows.E004") == []  # the project's sub-workflows exist
    registry.register_definition(
        WorkflowDefinition(
            name="orphan_parent",
            version="1",
            initial_step="sub",
            steps={"sub": SubWorkflowStep("sub_price", version="9"), "ok": Record()},
            edges=[Edge("sub", "ok")],
        )
    )
    try:
        (error,) = checks("django_workflows.E004")
    finally:
        registry.unregister("orphan_parent")
    assert error.level == ERROR
    assert error.obj == "orphan_parent 1: sub"
    assert "starts 'sub_price' version '9', which is not registered" in error.msg
    assert checks("django_workflows.E004") == []


# -- E002 and ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES ----------------------------------------


def _changed_after_its_instances_went(settings, allow):
    """drift_demo 1.0.0 stored, its instances deleted, then registered with another graph."""
    settings.DJANGO_WORKFLOWS = {
        **getattr(settings, "DJANGO_WORKFLOWS", {}),
        "ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES": allow,
    }
    LocalExecutionEngine().start_workflow("drift_demo")
    WorkflowInstance.objects.filter(definition__name="drift_demo").delete()
    registry.unregister("drift_demo", "1.0.0")
    return registry.register_definition(drift_demo(changed=True))


def test_a_changed_graph_of_a_version_nobody_runs_is_refused_saying_how(
    on_project_registry, settings
):
    settings.DEBUG = False
    _changed_after_its_instances_went(settings, None)  # None: follow DEBUG

    [error] = checks("django_workflows.E002", databases=["default"])
    assert "no instance runs that version" in error.hint
    assert 'DJANGO_WORKFLOWS["ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES"] = True' in error.hint
    with pytest.raises(DefinitionError, match="or allow replacing it in development"):
        LocalExecutionEngine().start_workflow("drift_demo")


@pytest.mark.parametrize(("allow", "debug"), [(True, False), (None, True)])
def test_in_development_a_changed_graph_of_a_version_nobody_runs_replaces_it(
    on_project_registry, settings, allow, debug
):
    settings.DEBUG = debug
    changed = _changed_after_its_instances_went(settings, allow)

    assert checks("django_workflows.E002", databases=["default"]) == []
    instance = LocalExecutionEngine().start_workflow("drift_demo")

    row = DefinitionVersion.objects.get(name="drift_demo", version="1.0.0")
    assert row.checksum == changed.checksum == instance.definition.checksum
    assert {"source": "submit", "target": "done", "condition": None} in row.graph["edges"]


def test_once_an_instance_runs_it_the_version_is_pinned_even_in_development(
    on_project_registry, settings
):
    settings.DJANGO_WORKFLOWS = {
        **getattr(settings, "DJANGO_WORKFLOWS", {}),
        "ALLOW_GRAPH_CHANGES_WITHOUT_INSTANCES": True,
    }
    LocalExecutionEngine().start_workflow("drift_demo")
    registry.unregister("drift_demo", "1.0.0")
    registry.register_definition(drift_demo(changed=True))

    [error] = checks("django_workflows.E002", databases=["default"])
    assert "instances run that version" in error.hint
    with pytest.raises(DefinitionError, match="migrate the instances"):
        LocalExecutionEngine().start_workflow("drift_demo")
