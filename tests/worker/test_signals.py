"""External signals on a real qcluster: the test process sends, the workers go on."""

import os

import pytest

from django_workflows import WorkflowStatus
from django_workflows.models import WorkflowSignal

from ..processes import wait_status

pytestmark = pytest.mark.worker


def test_a_signal_sent_from_another_process_moves_the_instance_on(q_engine, cluster, tmp_path):
    instance = q_engine.start_workflow("worker_signal", initial_data={"dir": str(tmp_path)})
    instance = wait_status(q_engine, instance, WorkflowStatus.WAITING)
    assert instance.current_steps == ["wait"]

    signal, created = q_engine.send_signal("go", {"n": 1}, instance_id=instance.pk)

    assert created and signal.state == "consumed"
    instance = wait_status(q_engine, instance, WorkflowStatus.COMPLETED)
    assert instance.context["go"] == {"n": 1}
    assert instance.context["end"]["pid"] != os.getpid()  # "end" ran on a worker


def test_a_signal_sent_before_the_worker_reaches_the_wait_is_buffered(q_engine, cluster, tmp_path):
    instance = q_engine.start_workflow("worker_signal", initial_data={"dir": str(tmp_path)})
    # "start" is queued for the workers: the signal is kept until the wait begins (or,
    # if a worker was faster, consumed by it at once).
    q_engine.send_signal("go", {"early": True}, instance_id=instance.pk, idempotency_key="e")
    q_engine.send_signal("go", {"early": False}, instance_id=instance.pk, idempotency_key="e")

    instance = wait_status(q_engine, instance, WorkflowStatus.COMPLETED)
    assert instance.context["go"] == {"early": True}
    assert WorkflowSignal.objects.get(instance=instance).state == "consumed"


def test_the_clusters_sweep_times_a_wait_out(q_engine, worker_env, start_process, tmp_path):
    start_process(
        ["qcluster"], {**worker_env, "WORKFLOWS_CLUSTER_SWEEP_INTERVAL": "0.5"}, "qcluster"
    )
    instance = q_engine.start_workflow("worker_signal", initial_data={"dir": str(tmp_path)})

    instance = wait_status(q_engine, instance, WorkflowStatus.FAILED)

    assert instance.failed_step == "wait"
    assert "no signal 'go' came within the step's timeout" in instance.error
