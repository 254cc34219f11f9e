"""Boundary edges on a real qcluster: an error edge taken on a worker, a timeout edge
fired by the cluster's own sweeper (no workflow_sweep, no schedule)."""

import os

import pytest
from django_q.models import Schedule

from django_workflows import WorkflowStatus
from django_workflows.models import HumanTask, StepRun

from .test_cluster_sweeper import wait_status

pytestmark = pytest.mark.worker


def test_an_error_edge_is_taken_on_a_worker(q_engine, cluster, tmp_path):
    instance = q_engine.start_workflow("worker_error_edge", initial_data={"dir": str(tmp_path)})

    instance = wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=60)

    assert instance.context["error"] == {
        "step": "charge",
        "type": "RuntimeError",
        "message": "card declined",
        "attempt": 2,
    }
    # on_failure ran once, on a worker, before the edge was taken.
    assert instance.context["on_failure"]["error"] == "card declined"
    assert instance.context["on_failure"]["pid"] != os.getpid()
    assert instance.context["notify"]["pid"] != os.getpid()
    assert "ship" not in instance.context
    runs = dict(instance.step_runs.values_list("step_name", "status"))
    assert runs == {"charge": "failed", "notify": "completed"}
    assert len((tmp_path / "charge.started").read_text().splitlines()) == 2


def test_the_clusters_sweeper_fires_a_timeout_edge(q_engine, cluster, tmp_path):
    # The instance waits at "approve", its timeout armed for 2 seconds; only the
    # cluster runs (no workflow_sweep process).
    instance = q_engine.start_workflow("worker_timeout_edge", initial_data={"dir": str(tmp_path)})

    instance = wait_status(instance.pk, WorkflowStatus.COMPLETED, timeout=60)

    assert "expired" in instance.context and "end" not in instance.context
    task = HumanTask.objects.get(instance=instance)
    assert (task.status, task.close_reason) == ("canceled", "timed out")
    approve = StepRun.objects.get(instance=instance, step_name="approve")
    assert approve.status == "canceled"
    late = (approve.finished_at - approve.timeout_at).total_seconds()
    assert 0 <= late < 5, late
    assert instance.events.filter(type="StepTimedOut").count() == 1
    assert not Schedule.objects.exists()
