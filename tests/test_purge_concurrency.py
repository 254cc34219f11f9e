"""Retention on PostgreSQL, with real concurrent transactions: a purge skips an
instance a transition holds (``SKIP LOCKED``) instead of waiting for it or deleting
under it, and a retry that committed first keeps its instance."""

import threading

import pytest
from django.db import connections, transaction

from django_workflows.engine import retention
from django_workflows.models import StepRun, WorkflowInstance, WorkflowStatus

from .factories import UserFactory
from .helpers import TIMEOUT
from .history import CUTOFF, age, full_expense

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_old(history_engine, manager):
    starter = UserFactory(username="starter")
    done = [full_expense(history_engine, starter, manager, key=f"k{n}") for n in range(2)]
    age(*done)
    return done


def test_a_purge_skips_an_instance_a_transition_holds(two_old):
    held, free = two_old
    locked, release = threading.Event(), threading.Event()

    def transition():  # holds the row lock as a transition does
        try:
            with transaction.atomic():
                WorkflowInstance.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(TIMEOUT)
        finally:
            connections.close_all()

    thread = threading.Thread(target=transition)
    thread.start()
    try:
        assert locked.wait(TIMEOUT)
        result = retention.purge(CUTOFF)  # returns at once: nothing waits for the lock
    finally:
        release.set()
        thread.join(TIMEOUT)

    assert (result.purged, result.skipped) == (1, 1)
    assert WorkflowInstance.objects.filter(pk=held.pk).exists()
    assert StepRun.objects.filter(instance=held).count() == 3
    assert not WorkflowInstance.objects.filter(pk=free.pk).exists()
    assert retention.purge(CUTOFF).purged == 1  # the next run takes it


def test_a_retry_committed_between_selection_and_deletion_keeps_its_instance(
    two_old, history_engine, monkeypatch
):
    kept, gone = two_old
    WorkflowInstance.objects.filter(pk=kept.pk).update(status=WorkflowStatus.FAILED)
    selected = retention.root_batches

    def batches_then_retry(*args, **kwargs):
        for batch in selected(*args, **kwargs):
            thread = threading.Thread(target=retry)  # another connection, committed
            thread.start()
            thread.join(TIMEOUT)
            yield batch

    def retry():
        try:
            WorkflowInstance.objects.filter(pk=kept.pk).update(
                status=WorkflowStatus.RUNNING, finished_at=None
            )
        finally:
            connections.close_all()

    monkeypatch.setattr(retention, "root_batches", batches_then_retry)

    result = retention.purge(CUTOFF)

    assert result.purged == 1
    assert WorkflowInstance.objects.get(pk=kept.pk).status == WorkflowStatus.RUNNING
    assert StepRun.objects.filter(instance=kept).count() == 3
    assert not WorkflowInstance.objects.filter(pk=gone.pk).exists()
