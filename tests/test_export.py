"""History export: the document (django_workflows.export), streamed in chunks with a
constant number of statements each; the API's export, the admin's download and
``manage.py workflow_export`` (filters, JSON lines and CSV, the progress bar)."""

import csv
import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from django_workflows import WorkflowStatus
from django_workflows.export import CSV_COLUMNS, FORMAT, documents, instance_document
from django_workflows.management.cli import progress_bar
from django_workflows.models import WorkflowInstance

from .factories import StaffFactory, UserFactory
from .history import full_expense

pytestmark = pytest.mark.django_db


@pytest.fixture
def starter():
    return UserFactory(username="starter")


@pytest.fixture
def done(history_engine, starter, manager):
    return full_expense(history_engine, starter, manager, key="EXP-1")


def test_the_document_holds_the_whole_history(done, starter, manager):
    doc = instance_document(done.pk)

    assert doc["format"] == FORMAT
    assert (doc["id"], doc["workflow"], doc["version"]) == (str(done.pk), "expense", "1.0.0")
    assert doc["status"] == WorkflowStatus.COMPLETED
    assert doc["business_key"] == "EXP-1"
    assert doc["started_by"] == {"id": starter.pk, "username": "starter"}
    assert doc["context"]["approved"] is False
    assert doc["finished_at"] == done.finished_at.isoformat()
    assert [r["step"] for r in doc["step_runs"]] == ["submit", "manager_approval", "reject"]
    assert {r["status"] for r in doc["step_runs"]} == {"completed"}
    [task] = doc["tasks"]
    assert task["candidate_groups"] == ["managers"]
    assert task["completed_by"] == {"id": manager.pk, "username": "manager"}
    assert task["result"]["approved"] is False
    types = [e["type"] for e in doc["events"]]
    assert types[0] == "WorkflowStarted" and "WorkflowCompleted" in types
    assert "CommentAdded" in types and "SignalReceived" in types
    [comment] = doc["comments"]
    assert comment["task"] == task["id"]
    assert comment["author"]["username"] == "manager"
    assert comment["attachment"].endswith("receipt.txt")
    [signal] = doc["signals"]
    assert (signal["name"], signal["data"], signal["state"]) == ("nudge", {"n": 1}, "discarded")
    assert doc["parent"] is None and doc["children"] == []
    json.dumps(doc)  # plain JSON values only


def test_the_document_links_a_sub_workflow_and_its_parent(history_engine):
    parent = history_engine.start_workflow("sub_single", initial_data={"the_line": {"qty": 1}})
    child = WorkflowInstance.objects.get(parent=parent)

    parent_doc, child_doc = instance_document(parent.pk), instance_document(child.pk)

    assert parent_doc["children"] == [str(child.pk)]
    assert child_doc["parent"] == str(parent.pk)
    assert child_doc["parent_step"] == "price" and child_doc["parent_item"] == 0


def statements(queryset, chunk_size):
    with CaptureQueriesContext(connection) as queries:
        docs = list(documents(queryset, chunk_size=chunk_size))
    return len(docs), len(queries)


def test_documents_stream_with_the_same_statements_per_chunk(history_engine, starter, manager):
    for n in range(6):
        full_expense(history_engine, starter, manager, key=f"EXP-{n}")
    rows = WorkflowInstance.objects.filter(business_key__startswith="EXP-")

    one = statements(rows.filter(business_key__in=["EXP-0", "EXP-1"]), 2)
    two = statements(rows.filter(business_key__in=["EXP-0", "EXP-1", "EXP-2", "EXP-3"]), 2)
    three = statements(rows, 2)

    assert (one[0], two[0], three[0]) == (2, 4, 6)
    per_chunk = two[1] - one[1]
    assert per_chunk == three[1] - two[1]  # constant: whatever the chunk holds
    assert per_chunk <= 8  # instances, runs, tasks, groups, events, comments, signals, children


# -- API ------------------------------------------------------------------------------


def test_the_api_exports_an_instance_the_user_may_see(done, starter):
    client = APIClient()
    client.force_login(starter)

    response = client.get(f"/api/workflows/instances/{done.pk}/export/")

    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(instance_document(done.pk)))


def test_the_api_export_answers_404_for_an_instance_the_user_may_not_see(done):
    client = APIClient()
    client.force_login(UserFactory(username="stranger"))

    assert client.get(f"/api/workflows/instances/{done.pk}/export/").status_code == 404
    assert client.get("/api/workflows/instances/not-a-uuid/export/").status_code == 404
    assert APIClient().get(f"/api/workflows/instances/{done.pk}/export/").status_code in (401, 403)


def test_the_api_export_follows_the_view_permission(done):
    viewer = UserFactory(username="auditor")
    viewer.user_permissions.add(Permission.objects.get(codename="view_workflowinstance"))
    client = APIClient()
    client.force_login(viewer)

    response = client.get(f"/api/workflows/instances/{done.pk}/export/")

    assert response.status_code == 200 and response.json()["id"] == str(done.pk)


# -- admin ----------------------------------------------------------------------------


def export_url(instance):
    return f"/admin/django_workflows/workflowinstance/{instance.pk}/export/"


def test_the_admin_page_links_to_a_json_download(client, done):
    staff = StaffFactory(username="auditor")
    staff.user_permissions.add(Permission.objects.get(codename="view_workflowinstance"))
    client.force_login(staff)

    page = client.get(f"/admin/django_workflows/workflowinstance/{done.pk}/change/")
    response = client.get(export_url(done))

    assert export_url(done).encode() in page.content
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="workflow-instance-{done.pk}.json"'
    )
    assert json.loads(response.content)["events"] == instance_document(done.pk)["events"]


def test_the_admin_refuses_the_download_to_staff_who_may_not_see_the_instance(client, done):
    client.force_login(StaffFactory(username="other"))

    assert client.get(export_url(done)).status_code == 403


# -- the command ----------------------------------------------------------------------


def export(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("workflow_export", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def mixed(history_engine, starter, manager):
    completed = full_expense(history_engine, starter, manager, key="A")
    failed = full_expense(history_engine, starter, manager, approved=True, key="B")
    waiting = history_engine.start_workflow("timer")
    return completed, failed, waiting


def test_the_command_writes_json_lines_to_stdout(mixed):
    out, err = export()

    lines = [json.loads(line) for line in out.splitlines()]
    assert {doc["id"] for doc in lines} == {str(i.pk) for i in mixed}
    assert err == ""  # no progress bar: stderr is not a terminal


def test_the_command_filters(mixed):
    completed, failed, waiting = mixed

    def ids(*args):
        return {json.loads(line)["id"] for line in export(*args)[0].splitlines()}

    assert ids("--status", "failed", "--status", "completed") == {str(completed.pk), str(failed.pk)}
    assert ids("--workflow", "timer") == {str(waiting.pk)}
    assert ids("--workflow", "expense", "--version", "2.0") == set()
    assert ids("--finished-before", "2000-01-01") == set()
    assert ids("--finished-after", "2000-01-01") == {str(completed.pk), str(failed.pk)}
    assert ids("--started-after", "2000-01-01T00:00+01:00") == {str(i.pk) for i in mixed}
    assert ids("--started-before", "2000-01-01") == set()


def test_the_command_writes_csv_to_a_file(mixed, tmp_path):
    target = tmp_path / "history.csv"

    out, err = export("--format", "csv", "--output", str(target), "--status", "failed")

    with target.open(newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[0] == list(CSV_COLUMNS)
    [row] = rows[1:]
    record = dict(zip(CSV_COLUMNS, row, strict=True))
    assert record["id"] == str(mixed[1].pk)
    assert record["status"] == "failed" and record["failed_step"] == "process_payment"
    assert record["started_by"] == "starter"
    assert int(record["tasks"]) == 1 and int(record["comments"]) == 1
    assert json.loads(record["context"])["approved"] is True
    assert out == "" and "exported 1 instances" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--finished-before", "yesterday"), "--finished-before 'yesterday': expected a date"),
        (("--started-after", "2026-02-30"), "--started-after '2026-02-30': expected a date"),
        (("--version", "1.0.0"), "--version needs --workflow"),
        (("--workflow", "expnese"), "--workflow: no workflow named 'expnese' (known: "),
        (("--batch-size", "0"), "--batch-size: 0 is not between 1 and 100000"),
        (("--batch-size", "2147483648"), "--batch-size: 2147483648 is not between 1 and 100000"),
        (("--batch-size", "lots"), "--batch-size: 'lots' is not an integer"),
        (("--status", "lost"), "invalid choice: 'lost'"),
        (("--format", "xml"), "invalid choice: 'xml'"),
        (("--output", "/nonexistent/dir/x.jsonl"), "--output '/nonexistent/dir/x.jsonl'"),
    ],
)
def test_the_command_refuses_bad_options(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        export(*args)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Command:
    def __init__(self, stream):
        from django.core.management.base import OutputWrapper

        self.stderr = OutputWrapper(stream)


def test_the_progress_bar_draws_on_a_terminal_only():
    terminal, piped = _Terminal(), io.StringIO()

    for stream in (terminal, piped):
        with progress_bar(_Command(stream), 3, "instances", verbosity=1) as bar:
            bar.update(3)
    with progress_bar(_Command(quiet := _Terminal()), 3, "instances", verbosity=0) as bar:
        bar.update(3)

    assert "3/3" in terminal.getvalue() and "instances" in terminal.getvalue()
    assert piped.getvalue() == "" and quiet.getvalue() == ""


def test_csv_cells_that_start_like_a_formula_are_neutralised(mixed, tmp_path):
    from django_workflows.export import csv_row, documents

    instance = mixed[1]
    WorkflowInstance.objects.filter(pk=instance.pk).update(
        business_key='=HYPERLINK("http://evil")', error="-2+3 cmd|' /C calc'!A0"
    )
    instance.started_by.username = "@SUM(1+1)"
    instance.started_by.save()
    [doc] = documents(WorkflowInstance.objects.filter(pk=instance.pk))
    record = dict(zip(CSV_COLUMNS, csv_row(doc), strict=True))
    assert record["business_key"] == '\'=HYPERLINK("http://evil")'
    assert record["error"] == "'-2+3 cmd|' /C calc'!A0"
    assert record["started_by"] == "'@SUM(1+1)"
    for start in ("+1", "\tx", "\rx"):
        doc["workflow"] = start
        assert csv_row(doc)[1] == "'" + start
    doc["workflow"] = "expense"  # plain text, numbers and JSON stay as they are
    row = csv_row(doc)
    assert row[1] == "expense" and row[11] == len(doc["step_runs"])
    assert json.loads(row[-1]) == doc["context"]


class _ClosedPipe(io.StringIO):
    """stdout piped into ``head -c 10``: the reader goes away after a few bytes."""

    def write(self, text):
        if self.tell() >= 10:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_pipe_ends_the_export_quietly(mixed):
    out, err = _ClosedPipe(), io.StringIO()

    with pytest.raises(SystemExit) as exit_:
        call_command("workflow_export", stdout=out, stderr=err)

    assert exit_.value.code == 1
    assert out.getvalue().startswith("{") and err.getvalue() == ""
