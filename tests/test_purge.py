"""Retention: ``manage.py workflow_purge`` and ``engine.retention`` delete finished
instances with everything under them, in batches, never an active one (nor a tree that
holds one), after exporting them if asked; the sweep applies ``RETENTION``."""

import io
import json
import os
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_workflows.checks import check_settings
from django_workflows.engine import retention
from django_workflows.models import (
    Comment,
    HumanTask,
    HumanTaskGroup,
    IdempotencyKey,
    StepRun,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowSignal,
    WorkflowStatus,
)

from .factories import UserFactory
from .history import CUTOFF, age, full_expense

pytestmark = pytest.mark.django_db
DEPENDENTS = (StepRun, HumanTask, HumanTaskGroup, WorkflowEvent, Comment, WorkflowSignal)


@pytest.fixture
def starter():
    return UserFactory(username="starter")


def purge(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("workflow_purge", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def rows_of(instance):
    """How many rows of each kind lie under ``instance``."""
    counts = {
        model.__name__: model.objects.filter(
            **{"task__instance" if model is HumanTaskGroup else "instance": instance}
        ).count()
        for model in DEPENDENTS
    }
    counts["IdempotencyKey"] = IdempotencyKey.objects.filter(instance=instance).count()
    return counts


@pytest.fixture
def old_and_new(history_engine, starter, manager):
    """Two old finished instances (completed, failed), a fresh finished one, an active
    one started long ago."""
    old = full_expense(history_engine, starter, manager, key="old")
    failed = full_expense(history_engine, starter, manager, approved=True, key="failed")
    fresh = full_expense(history_engine, starter, manager, key="fresh")
    active = history_engine.start_workflow("timer")
    age(old, failed)
    WorkflowInstance.objects.filter(pk=active.pk).update(started_at=CUTOFF - timedelta(days=99))
    return old, failed, fresh, active


def test_purge_deletes_old_finished_instances_with_everything_under_them(
    old_and_new, django_capture_on_commit_callbacks
):
    old, failed, fresh, active = old_and_new
    assert all(rows_of(old).values())  # one of each kind, at least
    files = [c.attachment.path for c in Comment.objects.filter(instance__in=[old, failed])]
    assert all(os.path.exists(f) for f in files)
    fresh_rows = rows_of(fresh)

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = purge("--finished-before", CUTOFF.isoformat())

    assert "purged 2 instances" in out
    assert set(WorkflowInstance.objects.values_list("pk", flat=True)) == {fresh.pk, active.pk}
    assert set(rows_of(old).values()) == {0} and set(rows_of(failed).values()) == {0}
    assert not any(os.path.exists(f) for f in files)  # attachments deleted after commit
    assert rows_of(fresh) == fresh_rows


def test_purge_never_touches_an_active_instance(history_engine, starter, manager):
    waiting = history_engine.start_workflow("expense", initial_data={"amount": 1})
    timer = history_engine.start_workflow("timer")
    # Even one whose finished_at is old (a retried instance keeps running).
    WorkflowInstance.objects.filter(pk__in=[waiting.pk, timer.pk]).update(
        finished_at=CUTOFF - timedelta(days=9)
    )

    out, _ = purge("--finished-before", CUTOFF.isoformat())

    assert "purged 0 instances" in out
    assert WorkflowInstance.objects.filter(pk__in=[waiting.pk, timer.pk]).count() == 2
    assert rows_of(waiting)["HumanTask"] == 1


def test_an_instance_that_becomes_active_after_selection_is_kept(
    old_and_new, history_engine, monkeypatch
):
    old, failed, *_ = old_and_new
    selected = retention.root_batches

    def batches_then_retry(*args, **kwargs):
        for batch in selected(*args, **kwargs):
            # Between selection and deletion: the failed instance is retried (running).
            WorkflowInstance.objects.filter(pk=failed.pk).update(
                status=WorkflowStatus.RUNNING, finished_at=None
            )
            yield batch

    monkeypatch.setattr(retention, "root_batches", batches_then_retry)

    out, _ = purge("--finished-before", CUTOFF.isoformat())

    assert "purged 1 instances" in out and "1 left" in out
    assert not WorkflowInstance.objects.filter(pk=old.pk).exists()
    assert rows_of(failed)["StepRun"] == 3  # untouched, rows and all


def test_the_delete_statements_recheck_the_status(old_and_new):
    old, failed, *_ = old_and_new
    WorkflowInstance.objects.filter(pk=failed.pk).update(status=WorkflowStatus.RUNNING)

    result = retention.purge_batch([old.pk, failed.pk], CUTOFF)

    assert (result.purged, result.skipped) == (1, 1)
    assert WorkflowInstance.objects.filter(pk=failed.pk).exists()
    assert all(rows_of(failed).values())


def test_purge_exports_exactly_what_it_deletes(old_and_new, tmp_path):
    old, failed, *_ = old_and_new
    target = tmp_path / "archive.jsonl"
    target.write_text('{"earlier": "run"}\n')  # appended to, never overwritten

    out, _ = purge("--finished-before", CUTOFF.isoformat(), "--export", str(target))

    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines[0] == {"earlier": "run"}
    assert {doc["id"] for doc in lines[1:]} == {str(old.pk), str(failed.pk)}
    assert all(doc["events"] and doc["step_runs"] for doc in lines[1:])
    assert f"exported to {target}" in out


def test_a_failed_export_deletes_nothing(old_and_new):
    old, failed, *_ = old_and_new

    def broken(docs):
        next(iter(docs))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        retention.purge(CUTOFF, export=broken)

    assert WorkflowInstance.objects.filter(pk__in=[old.pk, failed.pk]).count() == 2
    assert all(rows_of(old).values())


def test_purge_is_resumable_batch_by_batch(history_engine, starter, manager, monkeypatch):
    done = [full_expense(history_engine, starter, manager, key=f"n{n}") for n in range(5)]
    age(*done)
    real, calls = retention.purge_batch, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the operator's Ctrl-C, or a killed process
        return real(*args, **kwargs)

    monkeypatch.setattr(retention, "purge_batch", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        purge("--finished-before", CUTOFF.isoformat(), "--batch-size", "2")
    assert WorkflowInstance.objects.count() == 1  # two batches of two went, one stays
    monkeypatch.setattr(retention, "purge_batch", real)

    first, _ = purge("--finished-before", CUTOFF.isoformat(), "--batch-size", "2")
    again, _ = purge("--finished-before", CUTOFF.isoformat(), "--batch-size", "2")

    assert "purged 1 instances" in first and "purged 0 instances" in again
    assert WorkflowInstance.objects.count() == 0
    assert not any(model.objects.exists() for model in DEPENDENTS)


def test_workflow_filter(old_and_new, history_engine):
    other = history_engine.start_workflow("sub_single", initial_data={"the_line": {"qty": 1}})
    age(other)

    purge("--finished-before", CUTOFF.isoformat(), "--workflow", "sub_single")

    assert not WorkflowInstance.objects.filter(pk=other.pk).exists()
    assert WorkflowInstance.objects.filter(pk=old_and_new[0].pk).exists()


def test_an_unknown_workflow_is_an_error_not_nothing_to_purge(old_and_new):
    with pytest.raises(CommandError, match=r"no workflow named 'expnese' \(known: .*expense"):
        purge("--finished-before", CUTOFF.isoformat(), "--workflow", "expnese")

    assert WorkflowInstance.objects.filter(pk=old_and_new[0].pk).exists()


# -- sub-workflows ----------------------------------------------------------------------


@pytest.fixture
def parent_and_child(history_engine):
    parent = history_engine.start_workflow("sub_single", initial_data={"the_line": {"qty": 1}})
    child = WorkflowInstance.objects.get(parent=parent)
    age(parent, child)
    return parent, child


def test_a_child_goes_with_its_parent(parent_and_child):
    parent, child = parent_and_child
    assert child.definition.name == "sub_price"

    out, _ = purge("--finished-before", CUTOFF.isoformat(), "--workflow", "sub_single")

    assert "purged 2 instances" in out
    assert not WorkflowInstance.objects.filter(pk__in=[parent.pk, child.pk]).exists()
    assert not StepRun.objects.filter(instance__in=[parent.pk, child.pk]).exists()


def test_a_finished_child_of_an_active_parent_stays(parent_and_child):
    parent, child = parent_and_child
    WorkflowInstance.objects.filter(pk=parent.pk).update(
        status=WorkflowStatus.WAITING, finished_at=None
    )

    purge("--finished-before", CUTOFF.isoformat())

    assert WorkflowInstance.objects.filter(pk__in=[parent.pk, child.pk]).count() == 2


def test_a_finished_parent_with_an_active_child_stays_whole(parent_and_child):
    parent, child = parent_and_child
    WorkflowInstance.objects.filter(pk=child.pk).update(status=WorkflowStatus.RUNNING)

    out, _ = purge("--finished-before", CUTOFF.isoformat())

    assert "purged 0 instances" in out and "1 left" in out
    assert WorkflowInstance.objects.filter(pk__in=[parent.pk, child.pk]).count() == 2
    assert WorkflowInstance.objects.get(pk=child.pk).parent_id == parent.pk


# -- dry run, dates, the setting ----------------------------------------------------------


def test_dry_run_prints_what_would_go_and_deletes_nothing(old_and_new, parent_and_child):
    before = WorkflowInstance.objects.count()

    out, _ = purge("--finished-before", CUTOFF.isoformat(), "--dry-run", "-v", "2")

    assert "would purge 3 instances" in out and "and 1 sub-workflow instances" in out
    assert "  expense 1.0.0: 2\n" in out and "  sub_single 1: 1\n" in out
    assert str(old_and_new[0].pk) in out
    assert WorkflowInstance.objects.count() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--finished-before", "soon"), "--finished-before 'soon': expected a date"),
        (("--finished-before", "2026-01-01", "--batch-size", "0"), "--batch-size: 0 is not"),
        (
            ("--finished-before", "2026-01-01", "--batch-size", "99999999999999999999"),
            "--batch-size: 99999999999999999999 is not between 1 and 100000",
        ),
        ((), r'give --finished-before DATE \(DJANGO_WORKFLOWS\["RETENTION"\] is None\)'),
        (("--finished-before", "2026-01-01", "--export", "/nonexistent/a.jsonl"), "--export"),
    ],
)
def test_purge_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        purge(*args)


def test_without_a_date_the_command_applies_retention(old_and_new, settings):
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": 45}  # days

    out, _ = purge()

    assert "purged 2 instances" in out
    assert WorkflowInstance.objects.count() == 2


def test_the_sweep_purges_one_bounded_batch_when_retention_is_set(
    old_and_new, history_engine, settings, monkeypatch
):
    old, failed, fresh, active = old_and_new
    monkeypatch.setattr(retention, "SWEEP_BATCH", 1)
    settings.DJANGO_WORKFLOWS = {
        **settings.DJANGO_WORKFLOWS,
        "RETENTION": timedelta(days=45),
    }

    history_engine.run_due_timers()
    assert WorkflowInstance.objects.filter(pk__in=[old.pk, failed.pk]).count() == 1
    history_engine.run_due_timers()
    assert not WorkflowInstance.objects.filter(pk__in=[old.pk, failed.pk]).exists()
    assert WorkflowInstance.objects.filter(pk__in=[fresh.pk, active.pk]).count() == 2


def test_the_sweep_reads_nothing_more_without_retention(old_and_new, history_engine, settings):
    with CaptureQueriesContext(connection) as without:
        history_engine.run_due_timers()
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": 3650}
    with CaptureQueriesContext(connection) as with_nothing_due:
        history_engine.run_due_timers()

    assert not any("finished_at" in q["sql"] for q in without.captured_queries)
    assert len(with_nothing_due) == len(without) + 1  # one probe on the index
    assert WorkflowInstance.objects.count() == 4


@pytest.mark.parametrize("value", [0, -3, "30 days", timedelta(0), True])
def test_an_invalid_retention_is_reported_by_a_check(settings, value):
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": value}

    [error] = [e for e in check_settings() if e.id == "django_workflows.E005"]

    assert "RETENTION" in error.msg
    with pytest.raises(ValueError, match="not a"):
        retention.retention_period()


@pytest.mark.parametrize("value", [None, 30, 0.5, timedelta(days=400)])
def test_a_valid_retention_passes_the_check(settings, value):
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": value}

    assert [e for e in check_settings() if e.id == "django_workflows.E005"] == []


def test_every_row_pointing_into_an_instance_is_handled_by_the_purge():
    """A new foreign key to an instance, a step run or a task (in any installed app)
    must be added to ``retention.purge_batch`` (or to this list, if the collector's
    ``on_delete`` is right for it): the purge deletes those rows with raw DELETEs."""
    handled = {
        ("WorkflowInstance", "django_workflows.Comment", "instance"),
        ("WorkflowInstance", "django_workflows.WorkflowSignal", "instance"),
        ("WorkflowInstance", "django_workflows.WorkflowInstance", "parent"),
        ("WorkflowInstance", "django_workflows.StepRun", "instance"),
        ("WorkflowInstance", "django_workflows.HumanTask", "instance"),
        ("WorkflowInstance", "django_workflows.WorkflowEvent", "instance"),
        ("WorkflowInstance", "django_workflows.IdempotencyKey", "instance"),
        ("StepRun", "django_workflows.WorkflowInstance", "parent_step_run"),
        ("StepRun", "django_workflows.HumanTask", "step_run"),
        ("StepRun", "django_workflows.WorkflowSignal", "consumed_by_step_run"),
        ("HumanTask", "django_workflows.Comment", "task"),
        ("HumanTask", "django_workflows.HumanTaskGroup", "task"),
    }
    found = {
        (model.__name__, relation.related_model._meta.label, relation.field.name)
        for model in (WorkflowInstance, StepRun, HumanTask)
        for relation in model._meta.get_fields(include_hidden=True)
        if relation.auto_created
        and not relation.concrete
        and relation.related_model
        and not relation.related_model._meta.proxy
    }
    assert found == handled


@pytest.mark.parametrize("value", [1e9, 10**12, timedelta(days=999999), float("inf")])
def test_a_huge_retention_is_reported_as_too_large(
    settings, value, old_and_new, history_engine, caplog
):
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": value}

    [error] = [e for e in check_settings() if e.id == "django_workflows.E005"]
    assert "too large" in error.msg
    with pytest.raises(ValueError, match="too large"):
        retention.retention_period()
    with pytest.raises(CommandError, match="too large"):
        call_command("workflow_purge", stdout=io.StringIO())
    # The sweep goes on: one line naming the check, no traceback, nothing purged.
    with caplog.at_level("ERROR", logger="django_workflows.engine"):
        history_engine.run_due_timers()
    [record] = [r for r in caplog.records if "RETENTION" in r.getMessage()]
    assert "E005" in record.getMessage() and record.exc_info is None
    assert WorkflowInstance.objects.count() == 4


def test_the_sweep_command_says_how_many_instances_it_purged(old_and_new, settings):
    out = io.StringIO()
    call_command("workflow_sweep", stdout=out)
    assert out.getvalue() == "handled 0\n"  # without RETENTION: as before
    settings.DJANGO_WORKFLOWS = {**settings.DJANGO_WORKFLOWS, "RETENTION": 45}  # days

    out = io.StringIO()
    call_command("workflow_sweep", stdout=out)

    assert out.getvalue() == "handled 0, purged 2\n"
    assert WorkflowInstance.objects.count() == 2
    out = io.StringIO()
    call_command("workflow_sweep", stdout=out)
    assert out.getvalue() == "handled 0, purged 0\n"
