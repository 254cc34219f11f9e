"""The Celery backend: unit tests, then a real prefork worker and beat on the local Redis."""

import pytest

celery = pytest.importorskip("celery")

import re  # noqa: E402
import sys  # noqa: E402

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.test import override_settings  # noqa: E402

from django_workflows import registry  # noqa: E402
from django_workflows.contrib.celery import CeleryExecutionEngine, register_tasks  # noqa: E402
from django_workflows.contrib.celery.tasks import RUN_STEP, SWEEP  # noqa: E402
from django_workflows.engine import get_engine  # noqa: E402
from testproject.celery_app import app as project_app  # noqa: E402

from ..processes import approval, fan_out, kill_mid_step  # noqa: E402
from .conftest import LEASE_SECONDS, REDIS_URL  # noqa: E402

pytestmark = pytest.mark.contrib

CELERY_ENGINE = "django_workflows.contrib.celery.CeleryExecutionEngine"


# -- configuration -------------------------------------------------------------------------


def workflows(**keys):
    """The project's DJANGO_WORKFLOWS with ``keys`` changed."""
    return {**settings.DJANGO_WORKFLOWS, **keys}


def test_selected_by_the_engine_setting_with_the_app_of_the_celery_app_setting():
    with override_settings(DJANGO_WORKFLOWS=workflows(ENGINE=CELERY_ENGINE)):
        engine = get_engine()
        assert isinstance(engine, CeleryExecutionEngine)
        assert engine.celery_app is project_app  # DJANGO_WORKFLOWS["CELERY_APP"]


def test_the_old_top_level_setting_still_works_with_a_deprecation_warning():
    without = {k: v for k, v in settings.DJANGO_WORKFLOWS.items() if k != "CELERY_APP"}
    with (
        override_settings(
            DJANGO_WORKFLOWS=without, WORKFLOWS_CELERY_APP="testproject.celery_app.app"
        ),
        pytest.warns(DeprecationWarning, match=r"WORKFLOWS_CELERY_APP is deprecated"),
    ):
        assert CeleryExecutionEngine(registry).celery_app is project_app


def test_without_the_setting_the_current_app_sends():
    before = celery.current_app._get_current_object()
    current = celery.Celery("current-for-test", set_as_current=True)
    try:
        with override_settings(DJANGO_WORKFLOWS=workflows(CELERY_APP=None)):
            assert CeleryExecutionEngine(registry).celery_app is current
    finally:
        before.set_current()
        current.close()


def test_an_explicit_app_or_dotted_path_wins():
    app = celery.Celery("explicit", set_as_current=False)
    assert CeleryExecutionEngine(registry, celery_app=app).celery_app is app
    engine = CeleryExecutionEngine(registry, celery_app="testproject.celery_app.app")
    assert engine.celery_app is project_app


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (
            "testproject.celery_app.nope",
            "DJANGO_WORKFLOWS['CELERY_APP'] = 'testproject.celery_app.nope' could not be imported",
        ),
        ("testproject.celery_app.register_tasks", "must be a Celery app, not function"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(value, error):
    with (
        override_settings(DJANGO_WORKFLOWS=workflows(CELERY_APP=value)),
        pytest.raises(ImproperlyConfigured) as exc,
    ):
        CeleryExecutionEngine(registry)
    assert error in str(exc.value)


def test_register_tasks_adds_late_acking_tasks_and_an_expiring_beat_entry():
    app = celery.Celery("registry-test", set_as_current=False)
    tasks = register_tasks(app, sweep_interval=2.5)
    assert set(tasks) == {RUN_STEP, SWEEP}
    for name in (RUN_STEP, SWEEP):
        assert app.tasks[name].acks_late is True
        assert app.tasks[name].ignore_result is True
    entry = app.conf.beat_schedule[SWEEP]
    assert (entry["task"], entry["schedule"], entry["options"]["expires"]) == (SWEEP, 2.5, 2.5)

    bare = celery.Celery("no-beat", set_as_current=False)
    register_tasks(bare, sweep_interval=None)
    assert bare.conf.beat_schedule == {}
    with pytest.raises(ValueError, match="must be positive"):
        register_tasks(bare, sweep_interval=0)


@pytest.mark.django_db
def test_sends_the_run_id_to_the_run_step_task_after_commit(
    django_capture_on_commit_callbacks, monkeypatch, tmp_path
):
    app = celery.Celery("recording", set_as_current=False)
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: sent.append((name, options)))
    engine = CeleryExecutionEngine(registry, celery_app=app)
    with django_capture_on_commit_callbacks() as callbacks:
        instance = engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
    assert sent == []
    for callback in callbacks:
        callback()
    run = instance.step_runs.get()
    assert sent == [(RUN_STEP, {"args": [run.pk], "ignore_result": True})]


# -- a real worker -------------------------------------------------------------------------


@pytest.fixture
def celery_env(contrib_env, unique, redis_keys):
    redis_keys.extend([unique, f"{unique}\x06\x16*", f"_kombu.binding*.{unique}"])
    return {
        **contrib_env,
        "WORKFLOWS_ENGINE": "celery",
        "CELERY_QUEUE": unique,
        "CELERY_SWEEP_SECONDS": "0.25",
    }


@pytest.fixture
def celery_engine(celery_env):
    """The test process sends to the queue of this test's worker."""
    app = celery.Celery("producer", broker=REDIS_URL, set_as_current=False)
    app.conf.task_default_queue = celery_env["CELERY_QUEUE"]
    yield CeleryExecutionEngine(registry, celery_app=app)
    app.close()


def celery_command(*args):
    return [sys.executable, "-m", "celery", "-A", "testproject.celery_app", *args]


@pytest.fixture
def celery_worker(celery_env, start_process):
    """A prefork worker with three processes, taking one message at a time each."""
    queue = celery_env["CELERY_QUEUE"]
    argv = celery_command(
        "worker",
        "--pool=prefork",
        "--concurrency=3",
        f"--queues={queue}",
        f"--hostname={queue}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--loglevel=INFO",
    )
    return start_process(argv, celery_env, "celery-worker")


@pytest.fixture
def celery_beat(celery_env, start_process, tmp_path):
    """Beat, sending the sweep every 0.25 s (CELERY_SWEEP_SECONDS)."""
    argv = celery_command(
        "beat", f"--schedule={tmp_path / 'beat-schedule'}", "--pidfile=", "--loglevel=INFO"
    )
    return start_process(argv, celery_env, "celery-beat")


@pytest.mark.usefixtures("celery_worker")
def test_parallel_branches_run_on_three_worker_processes(celery_engine, tmp_path):
    instance = fan_out(celery_engine, tmp_path)
    assert len({instance.context[b]["pid"] for b in ("left", "middle", "right")}) == 3


@pytest.mark.usefixtures("celery_worker")
def test_human_approval_with_the_worker(celery_engine, tmp_path):
    approval(celery_engine, tmp_path)


@pytest.mark.usefixtures("celery_worker", "celery_beat")
def test_worker_process_killed_mid_step_is_recovered_by_the_beat_sweep(
    celery_engine, celery_worker, tmp_path
):
    kill_mid_step(celery_engine, tmp_path, LEASE_SECONDS)
    # A sweep that beat sent is the one that re-queued the run (it returns how many).
    assert re.search(
        r"django_workflows\.sweep\[\S+\] succeeded in \S+: 1\b", celery_worker.output()
    )
