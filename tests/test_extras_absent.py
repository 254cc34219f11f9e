"""Without the extras ``metrics`` and ``tracing`` installed, the app imports and runs:
a process in which ``prometheus_client`` and ``opentelemetry`` cannot be imported."""

import subprocess
import sys
import textwrap

from .processes import ROOT

SCRIPT = textwrap.dedent(
    """
    import sys

    class Blocked:
        # Every import of the extras fails, as when they are not installed.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings

    call_command("migrate", verbosity=0)
    from django_workflows import metrics, tracing
    from django_workflows.engine import LocalExecutionEngine
    from django_workflows.registry import WorkflowRegistry
    from testproject.testapp import bench_tasks

    registry = WorkflowRegistry()
    for definition in bench_tasks.definitions():
        registry.register_definition(definition)
    instance = LocalExecutionEngine(registry).start_workflow("bench_chain")
    assert instance.status == "completed", instance.status
    assert tracing.ACTIVE is False and tracing.trace is None
    assert not metrics.available()
    assert tracing.message_args(1) == ()
    with override_settings(DJANGO_WORKFLOWS={"METRICS_TOKEN": "t"}):
        response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer t")
    assert response.status_code == 503, response.status_code
    assert b"django-workflows-engine[metrics]" in response.content
    assert not [m for m in sys.modules if m.startswith(("prometheus_client", "opentelemetry"))]
    print("ran without the extras")
    """
)


def test_the_app_runs_without_prometheus_client_and_opentelemetry(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ran without the extras" in done.stdout
