"""Metrics of a real qcluster's worker processes, in prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``), appear in the web process's scrape."""

import pytest

from ..observability import own_registry
from ..processes import fan_out

pytestmark = pytest.mark.worker


def test_counters_of_the_worker_processes_appear_in_the_scrape(
    q_engine, worker_env, start_process, tmp_path, client, monkeypatch
):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    start_process(["qcluster"], {**worker_env, "PROMETHEUS_MULTIPROC_DIR": str(folder)}, "qcluster")

    instance = fan_out(q_engine, tmp_path)  # three branches on three worker processes

    # The web process reads every process's files (it set the variable too).
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    with own_registry():
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    text = response.content.decode()
    executed = 'django_workflows_steps_executed_total{step="%s",workflow="worker_fan_out"} 1.0'
    for step in ("start", "left", "middle", "right", "join"):
        assert executed % step in text
    completed = 'django_workflows_instances_completed_total{workflow="worker_fan_out"} 1.0'
    assert completed in text  # the join's worker completed it
    assert (
        'django_workflows_step_duration_seconds_count{step="left",workflow="worker_fan_out"} 1.0'
        in text
    )
    # The database gauges come along.
    assert 'django_workflows_instances{status="completed",workflow="worker_fan_out"} 1.0' in text
    assert len(list(folder.glob("*.db"))) >= 3  # one file per worker process and kind
    assert instance.status == "completed"
