"""``manage.py run_workflow`` on the demo workflows (in the project registry by autodiscovery)."""

import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from django_workflows import WorkflowStatus
from django_workflows.models import HumanTask, WorkflowInstance

from .factories import GroupFactory

pytestmark = pytest.mark.django_db


def run(*args, out=None, **options):
    out = out if out is not None else io.StringIO()
    call_command("run_workflow", *args, stdout=out, stderr=io.StringIO(), no_color=True, **options)
    return out.getvalue()


def started(output):
    """The instance the command printed."""
    match = re.search(r"^instance: (\S+)$", output, re.MULTILINE)
    assert match, output
    return WorkflowInstance.objects.get(pk=match.group(1))


def test_order_fulfillment_completes_and_prints_id_and_status():
    output = run("order_fulfillment")

    instance = started(output)
    assert instance.status == WorkflowStatus.COMPLETED
    assert "workflow: order_fulfillment 1.0.0\n" in output
    assert "status: completed\n" in output
    assert "current step: -\n" in output
    assert "waiting for" not in output
    assert instance.context["order_status"] == "complete"
    assert all(instance.context[f"notified_{c}"] for c in ("email", "slack", "sms"))


def test_expense_approval_waits_and_prints_the_open_task():
    GroupFactory(name="managers")
    output = run("expense_approval", "--data", '{"amount": 120}')

    instance = started(output)
    task = HumanTask.objects.get(instance=instance)
    assert instance.status == WorkflowStatus.WAITING
    assert "status: waiting\n" in output
    assert "current step: manager_approval\n" in output
    assert f"waiting for: human task {task.pk} 'Approve expense claim' (manager_approval)" in output
    assert instance.context == {"amount": 120, "submitted": True}


@pytest.mark.parametrize(
    ("args", "options"),
    [(["--version", "1.0.0"], {}), (["--version=1.0.0"], {}), ([], {"version": "1.0.0"})],
    ids=["option", "option=value", "call_command-kwarg"],
)
def test_version_option(args, options):
    output = run("order_fulfillment", *args, **options)

    assert "workflow: order_fulfillment 1.0.0" in output
    assert started(output).definition.version == "1.0.0"


def test_data_file(tmp_path):
    path = tmp_path / "claim.json"
    path.write_text(json.dumps({"amount": 42, "note": "Zoë's café"}), encoding="utf-8")

    instance = started(run("expense_approval", "--data-file", str(path)))

    assert instance.context["amount"] == 42
    assert instance.context["note"] == "Zoë's café"
    assert instance.status == WorkflowStatus.WAITING


def test_business_key_and_verbose_context():
    output = run(
        "order_fulfillment", "--business-key", "ORDER-7", "--data", '{"n": 1}', verbosity=2
    )

    instance = started(output)
    assert instance.business_key == "ORDER-7"
    assert '"order_status": "complete"' in output
    assert '"n": 1' in output


def test_context_is_not_printed_at_normal_verbosity():
    assert "context:" not in run("order_fulfillment", "--data", '{"secret": "s3cr3t"}')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no workflow named 'nope' is registered"),
        (
            ["order_fulfillment", "--version", "9.9.9"],
            "workflow 'order_fulfillment' has no version '9.9.9' (registered: 1.0.0)",
        ),
        (["order_fulfillment", "--data", "{not json"], "--data is not valid JSON: "),
        (["order_fulfillment", "--data", ""], "--data is not valid JSON: "),
        (["order_fulfillment", "--data", "[1, 2]"], "--data must be a JSON object, not list"),
        (["order_fulfillment", "--data", '"text"'], "--data must be a JSON object, not str"),
        (["order_fulfillment", "--data", "null"], "--data must be a JSON object, not NoneType"),
        (["order_fulfillment", "--data", '{"x": NaN}'], "context value for 'x' is not JSON"),
    ],
)
def test_errors_raise_command_error_and_start_nothing(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)

    assert WorkflowInstance.objects.count() == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("directory", "cannot read {path}: Is a directory"),
        (b"\xff\xfe{", "{path} is not UTF-8 text: invalid start byte"),
        (b"{'amount': 1}", "{path} is not valid JSON: "),
        (b"[]", "{path} must be a JSON object, not list"),
    ],
    ids=["missing", "directory", "not-utf8", "bad-json", "not-an-object"],
)
def test_data_file_errors(tmp_path, content, message):
    path = tmp_path / "data.json"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)

    with pytest.raises(CommandError, match=re.escape(message.format(path=path))):
        run("expense_approval", "--data-file", str(path))

    assert WorkflowInstance.objects.count() == 0


def test_data_and_data_file_are_mutually_exclusive(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("{}", encoding="utf-8")

    with pytest.raises(CommandError, match="not allowed with argument"):
        run("order_fulfillment", "--data", "{}", "--data-file", str(path))


def test_a_failing_instance_prints_the_error_then_fails_the_command():
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"instance \S+ failed at submit") as excinfo:
        run("expense_approval", "--data", '{"amount": -1}', out=out)

    assert excinfo.value.returncode == 1  # manage.py exits non-zero
    output = out.getvalue()
    instance = started(output)
    assert instance.status == WorkflowStatus.FAILED
    assert instance.failed_step == "submit"
    assert "status: failed\n" in output
    assert "error: ValueError: amount must be a positive number, got -1" in output
