"""The SAQ backend: unit tests, then real ``saq`` workers on the local Redis."""

import pytest

saq = pytest.importorskip("saq")

import sys  # noqa: E402

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_workflows import registry  # noqa: E402
from django_workflows.contrib.saq import (  # noqa: E402
    SAQExecutionEngine,
    run_workflow_step,
    sweep_workflows,
    worker_settings,
)
from django_workflows.engine import get_engine  # noqa: E402

from ..processes import approval, fan_out, kill_mid_step  # noqa: E402
from .conftest import LEASE_SECONDS, REDIS_URL  # noqa: E402

pytestmark = pytest.mark.contrib

SAQ_ENGINE = "django_workflows.contrib.saq.SAQExecutionEngine"


@pytest.fixture
def queue_name(unique, redis_keys):
    redis_keys.extend([f"saq:{unique}:*", f"saq:job:{unique}:*"])
    return unique


@pytest.fixture
def saq_engine(queue_name):
    engine = SAQExecutionEngine(registry, queue=saq.Queue.from_url(REDIS_URL, name=queue_name))
    yield engine
    engine.close()


# -- configuration -------------------------------------------------------------------------


def test_selected_by_the_engine_setting_with_the_queue_of_the_url_setting():
    with override_settings(
        DJANGO_WORKFLOWS={
            "ENGINE": SAQ_ENGINE,
            "SAQ_URL": "redis://127.0.0.1:6379/3",
            "SAQ_QUEUE": "steps",
        }
    ):
        engine = get_engine()
        assert isinstance(engine, SAQExecutionEngine)
        assert engine.queue.name == "steps"
        assert engine.queue.redis.connection_pool.connection_kwargs["db"] == 3


def test_without_a_url_the_error_names_the_setting():
    with (
        override_settings(DJANGO_WORKFLOWS={"SAQ_URL": None}),
        pytest.raises(ImproperlyConfigured) as exc,
    ):
        SAQExecutionEngine(registry)
    assert "set DJANGO_WORKFLOWS['SAQ_URL']" in str(exc.value)


def test_worker_settings_run_the_step_job_and_the_sweep_cron_job():
    async def my_startup(ctx):
        pass

    queue = saq.Queue.from_url(REDIS_URL, name="settings-test")
    settings = worker_settings(
        queue, concurrency=4, sweep_cron="* * * * * */2", startup=my_startup, timers={"sweep": 5}
    )
    assert settings["queue"] is queue
    assert settings["functions"] == [run_workflow_step]
    assert settings["concurrency"] == 4
    assert settings["timers"] == {"sweep": 5}
    [cron] = settings["cron_jobs"]
    assert (cron.function, cron.cron, cron.timeout) == (sweep_workflows, "* * * * * */2", 60)
    assert settings["startup"][-1] is my_startup
    assert worker_settings(queue, sweep_cron=None)["cron_jobs"] == []
    # What the saq command builds from them.
    worker = saq.Worker(**settings)
    assert set(worker.functions) == {"run_workflow_step", "sweep_workflows"}


def test_worker_settings_default_to_the_queue_of_the_settings():
    with override_settings(DJANGO_WORKFLOWS={"SAQ_URL": REDIS_URL, "SAQ_QUEUE": "from-settings"}):
        assert worker_settings()["queue"].name == "from-settings"


@pytest.mark.django_db
def test_enqueues_a_job_with_the_run_id_after_commit(
    saq_engine, django_capture_on_commit_callbacks, tmp_path
):
    def queued():
        return saq_engine.run_on_loop(saq_engine.queue.count("queued"))

    with django_capture_on_commit_callbacks() as callbacks:
        instance = saq_engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
    assert queued() == 0
    for callback in callbacks:
        callback()
    assert queued() == 1
    [job] = saq_engine.run_on_loop(saq_engine.queue.info(jobs=True))["jobs"]
    assert job["function"] == "run_workflow_step"
    assert job["kwargs"] == {"run_id": instance.step_runs.get().pk}
    assert job["timeout"] == 0  # the engine's step timeout applies, not SAQ's 10 s


# -- real workers --------------------------------------------------------------------------


@pytest.fixture
def saq_env(contrib_env, queue_name):
    return {**contrib_env, "WORKFLOWS_ENGINE": "saq", "SAQ_QUEUE": queue_name}


def saq_command():
    return [sys.executable, "-m", "saq", "testproject.saq_worker.settings", "--verbose"]


@pytest.fixture
def saq_worker(saq_env, start_process):
    """One worker process running three jobs at a time (each step in a thread)."""
    return start_process(saq_command(), {**saq_env, "SAQ_CONCURRENCY": "3"}, "saq-worker")


def test_parallel_branches_run_at_once_in_one_worker_process(saq_engine, saq_worker, tmp_path):
    instance = fan_out(saq_engine, tmp_path)
    # Each branch waited for the other two to start: three concurrent jobs in one process.
    assert {instance.context[b]["pid"] for b in ("left", "middle", "right")} == {
        saq_worker.popen.pid
    }


@pytest.mark.usefixtures("saq_worker")
def test_human_approval_with_the_worker(saq_engine, tmp_path):
    approval(saq_engine, tmp_path)


def test_worker_killed_mid_step_is_recovered_by_the_cron_sweep(
    saq_engine, saq_env, start_process, tmp_path
):
    env = {
        **saq_env,
        "SAQ_SWEEP_CRON": "* * * * * *",  # every second
        "SAQ_SWEEP_TIMEOUT": "3",  # a sweep job of the killed worker is given up soon
        "SAQ_QUEUE_SWEEP_SECONDS": "1",
    }
    workers = [start_process(saq_command(), env, f"saq-worker-{i}") for i in (1, 2)]

    instance, killed = kill_mid_step(saq_engine, tmp_path, LEASE_SECONDS)

    survivor = next(w for w in workers if w.popen.pid != killed)
    assert instance.context["hang"]["pid"] == survivor.popen.pid
    assert "sweep_workflows" in survivor.output()
