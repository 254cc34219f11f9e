"""What every contrib backend shares (``QueueExecutionEngine``): messages after commit,
a lost message re-sent by the sweep. No extra is needed."""

import logging

import pytest
from django.db import transaction
from django.test import override_settings

from django_workflows import registry
from django_workflows.contrib.queued import QueueExecutionEngine
from django_workflows.models import StepRun

pytestmark = [pytest.mark.contrib, pytest.mark.django_db]


class Recorder(QueueExecutionEngine):
    def __init__(self, fail=()):
        super().__init__(registry)
        self.sent = []
        self.fail = set(fail)

    def send(self, run_id):
        if run_id in self.fail:
            raise ConnectionError("broker down")
        self.sent.append(run_id)


def queued_ids(instance):
    return list(
        StepRun.objects.filter(instance=instance, status="queued").values_list("pk", flat=True)
    )


def test_sends_run_ids_after_the_callers_transaction_commits(
    django_capture_on_commit_callbacks, tmp_path
):
    engine = Recorder()
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        instance = engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
        assert engine.sent == []
    assert engine.sent == []  # still inside the test's transaction
    for callback in callbacks:
        callback()
    assert engine.sent == queued_ids(instance)
    assert len(engine.sent) == 1


def test_rolled_back_transition_sends_nothing(django_capture_on_commit_callbacks, tmp_path):
    engine = Recorder()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
        transaction.set_rollback(True)  # the caller's transaction fails
    assert callbacks == []
    assert engine.sent == []
    assert not StepRun.objects.exists()


def test_failed_send_is_logged_and_the_sweep_sends_it_again(
    django_capture_on_commit_callbacks, caplog, tmp_path
):
    engine = Recorder()
    with django_capture_on_commit_callbacks(execute=True):
        first = engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
    lost = queued_ids(first)[0]
    engine.sent.clear()
    engine.fail = {lost}
    with (
        caplog.at_level(logging.ERROR, "django_workflows.engine"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        engine.dispatch([lost, 424242])  # the second id is sent although the first failed
    assert engine.sent == [424242]
    assert f"sending step run {lost} failed" in caplog.text
    assert StepRun.objects.get(pk=lost).status == "queued"

    engine.fail = set()
    engine.sent.clear()
    with (
        override_settings(DJANGO_WORKFLOWS={"STALE_QUEUED_SECONDS": 0}),
        django_capture_on_commit_callbacks(execute=True),
    ):
        engine.run_due_timers()
    assert engine.sent == [lost]
