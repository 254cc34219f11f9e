"""``manage.py workflow_migrate``: plan, dry run, migrate, bad arguments."""

import io

import pytest
from django.core.management import CommandError, call_command

from django_workflows import LocalExecutionEngine, WorkflowRegistry
from django_workflows.management.commands import workflow_migrate
from django_workflows.models import WorkflowInstance

from .engine.test_migration import payment_v1, payment_v2

pytestmark = pytest.mark.django_db


@pytest.fixture
def engine(monkeypatch):
    engine = LocalExecutionEngine(WorkflowRegistry())
    monkeypatch.setattr(workflow_migrate, "get_engine", lambda: engine)
    engine.registry.register_definition(payment_v1())
    return engine


@pytest.fixture
def instances(engine):
    started = [engine.start_workflow("payment") for _ in range(2)]
    reviewed = engine.start_workflow("payment", initial_data={"kind": "review"})
    engine.registry.register_definition(payment_v2())
    return started, reviewed


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("workflow_migrate", *args, stdout=out, stderr=err, no_color=True)
    return out.getvalue(), err.getvalue()


def versions():
    return sorted(WorkflowInstance.objects.values_list("definition__version", flat=True))


def test_dry_run_prints_the_plan_and_changes_nothing(instances):
    started, reviewed = instances
    out, err = run("payment", "1.0.0", "2.0.0", "--dry-run")
    assert "payment 1.0.0 -> 2.0.0: 2 movable, 1 blocked" in out
    assert f"{started[0].pk}: movable (at approval)" in out
    assert f"{reviewed.pk}: blocked: step 'review' removed in 2.0.0 and not mapped" in out
    assert err == ""
    assert versions() == ["1.0.0"] * 3


def test_migrates_with_a_progress_line_and_a_summary(instances):
    out, err = run("payment", "1.0.0", "2.0.0", "--map", "review=approval")
    assert "3 movable, 0 blocked" in out
    assert "3 migrated to 2.0.0, 0 skipped" in out
    assert "migrating: 3/3" in err
    assert versions() == ["2.0.0"] * 3


def test_only_the_instances_named(instances):
    started, _ = instances
    out, _ = run("payment", "1.0.0", "2.0.0", "--instance", str(started[1].pk))
    assert "1 migrated to 2.0.0, 0 skipped" in out
    assert WorkflowInstance.objects.get(pk=started[1].pk).definition.version == "2.0.0"
    assert versions() == ["1.0.0", "1.0.0", "2.0.0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "review"], "--map 'review': expected OLD=NEW"),
        (["--map", "nope=approval"], "step_map: payment 1.0.0 has no step 'nope'"),
        (["--instance", "x"], "instance_ids: not a list of instance ids: 'x' is no instance id"),
    ],
)
def test_bad_arguments_are_command_errors(instances, args, message):
    with pytest.raises(CommandError, match=message):
        run("payment", "1.0.0", "2.0.0", *args)
    assert versions() == ["1.0.0"] * 3


def test_an_unknown_version_is_a_command_error(instances):
    with pytest.raises(CommandError, match=r"to_version: .*no version '9'"):
        run("payment", "1.0.0", "9")


def test_an_unknown_workflow_is_a_command_error_on_workflow(instances):
    with pytest.raises(CommandError, match=r"^workflow: no workflow named 'nope' is registered"):
        run("nope", "1.0.0", "2.0.0")
