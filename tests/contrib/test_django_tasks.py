"""The Django Tasks backend: any Tasks backend runs the steps. Unit tests on the immediate
backend, then django-tasks' database backend with real ``db_worker`` processes."""

import pytest

pytest.importorskip("django_tasks")

from django.test import override_settings
from django_tasks.exceptions import InvalidTaskError

from django_workflows import WorkflowStatus, registry
from django_workflows.contrib.django_tasks import DjangoTasksExecutionEngine
from django_workflows.engine import get_engine

from ..processes import approval, fan_out, kill_mid_step
from .conftest import LEASE_SECONDS, manage

pytestmark = pytest.mark.contrib

TASKS_ENGINE = "django_workflows.contrib.django_tasks.DjangoTasksExecutionEngine"
RUN_STEP = "django_workflows.contrib.django_tasks.tasks.run_step"
IMMEDIATE = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def test_selected_by_the_engine_setting():
    with override_settings(DJANGO_WORKFLOWS={"ENGINE": TASKS_ENGINE}):
        assert isinstance(get_engine(), DjangoTasksExecutionEngine)


@pytest.mark.usefixtures("transactional_db")
def test_any_tasks_backend_runs_the_steps_here_the_immediate_one(tmp_path):
    # The immediate backend runs each task as it is enqueued, in this process: the
    # chain is done when start_workflow returns, every step through the run_step task.
    with override_settings(TASKS=IMMEDIATE, DJANGO_WORKFLOWS={"ENGINE": TASKS_ENGINE}):
        instance = get_engine().start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
    assert instance.status == WorkflowStatus.COMPLETED
    assert [instance.context[f"s{i}"]["attempt"] for i in range(1, 6)] == [1] * 5


@pytest.fixture
def db_backend():
    pytest.importorskip("django_tasks_db")
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult


@pytest.mark.django_db
def test_enqueues_the_run_step_task_with_the_run_id_after_commit(
    db_backend, django_capture_on_commit_callbacks, tmp_path
):
    engine = DjangoTasksExecutionEngine(registry)
    with django_capture_on_commit_callbacks() as callbacks:
        instance = engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
    assert not db_backend.objects.exists()
    for callback in callbacks:
        callback()
    task = db_backend.objects.get()
    assert (task.task_path, task.args_kwargs) == (
        RUN_STEP,
        {"args": [instance.step_runs.get().pk], "kwargs": {}},
    )
    assert (task.backend_name, task.queue_name, task.priority, task.status) == (
        "default",
        "default",
        0,
        "READY",
    )


@pytest.mark.django_db
def test_backend_queue_and_priority_are_chosen_by_the_engine(
    db_backend, django_capture_on_commit_callbacks, tmp_path
):
    backends = {
        "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
        "steps": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["workflows"]},
    }
    with override_settings(TASKS=backends):
        engine = DjangoTasksExecutionEngine(
            registry, backend="steps", queue_name="workflows", priority=10
        )
        with django_capture_on_commit_callbacks(execute=True):
            engine.start_workflow("worker_chain", initial_data={"dir": str(tmp_path)})
        task = db_backend.objects.get()
        assert (task.backend_name, task.queue_name, task.priority) == ("steps", "workflows", 10)

        # A queue the backend does not serve fails when the engine is built, clearly.
        with pytest.raises(InvalidTaskError, match="Queue 'elsewhere' is not valid for backend"):
            DjangoTasksExecutionEngine(registry, backend="steps", queue_name="elsewhere")


# -- real db_worker processes --------------------------------------------------------------


@pytest.fixture
def tasks_env(db_backend, contrib_env):
    return {**contrib_env, "WORKFLOWS_ENGINE": "tasks"}


@pytest.fixture
def tasks_engine(tasks_env):
    return DjangoTasksExecutionEngine(registry)


def db_worker(start_process, env, name):
    argv = manage("db_worker", "--interval", "0.05", "--no-startup-delay", "--no-reload")
    return start_process(argv, env, name)


@pytest.fixture
def db_workers(tasks_env, start_process):
    """Three db_worker processes: each runs one task at a time."""
    return [db_worker(start_process, tasks_env, f"db-worker-{i}") for i in (1, 2, 3)]


def test_parallel_branches_run_on_three_db_workers(tasks_engine, db_workers, tmp_path):
    instance = fan_out(tasks_engine, tmp_path)
    pids = {instance.context[b]["pid"] for b in ("left", "middle", "right")}
    assert pids == {w.popen.pid for w in db_workers}


@pytest.mark.usefixtures("db_workers")
def test_human_approval_with_the_workers(tasks_engine, tmp_path):
    approval(tasks_engine, tmp_path)


def test_db_worker_killed_mid_step_is_recovered_by_the_sweeper(
    tasks_engine, tasks_env, start_process, tmp_path
):
    workers = [db_worker(start_process, tasks_env, f"db-worker-{i}") for i in (1, 2)]
    sweeper = start_process(
        manage("workflow_sweep", "--loop", "--interval", "0.25", "--verbosity", "2"),
        tasks_env,
        "sweeper",
    )

    instance, killed = kill_mid_step(tasks_engine, tmp_path, LEASE_SECONDS)

    survivor = next(w for w in workers if w.popen.pid != killed)
    assert instance.context["hang"]["pid"] == survivor.popen.pid
    assert "handled 1" in sweeper.output()
