"""The documentation is true: its examples run and do what the pages say, and its
reference pages list what the code has.

The code of README.md and docs/**/*.md is written inline, as fenced ```python blocks, so
that it reads the same on the package index, on the code host and in Sphinx.

- EVERY ```python block runs (``test_every_python_block_runs``): page by page, in order,
  in one namespace per page, so a block may use what an earlier block of its page
  defined. The names a page uses without defining them (a ``manager`` user, a stand-in
  for a payment service) are given by ``PAGE_NAMES`` below.
- A block that is an excerpt of a larger file (settings, ``urls.py``, a signature) and
  cannot run alone is marked as a FRAGMENT: the line ``<!-- fragment -->`` (or
  ``<!-- fragment: why -->``) just before its fence, which renders as nothing on GitHub,
  PyPI and in Sphinx. A fragment is compiled, not run. A block that is neither runnable
  nor marked fails the test.
- The quickstart's settings, URLs and workflow are also followed literally in a new
  project (``test_the_quickstart_sets_up_a_working_project``).
- The tests after that run a page's blocks with stand-ins and check what the text next
  to them claims. ``tests/snippets.py`` finds and runs the blocks.
"""

import ast
import contextlib
import dataclasses
import html
import io
import json
import logging
import os
import re
import sys
import tomllib
import types
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin import AdminSite
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models.functions import Now
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from django_workflows import InMemoryEventBus, WorkflowStatus, conf
from django_workflows.engine.base import BaseExecutionEngine
from django_workflows.events import EVENT_TYPES
from django_workflows.models import (
    Comment,
    DefinitionVersion,
    HumanTask,
    HumanTaskGroup,
    IdempotencyKey,
    StepRun,
    Substitution,
    WorkflowEvent,
    WorkflowInstance,
    WorkflowSignal,
)
from django_workflows.signals import workflow_event

from .factories import GroupFactory, StaffFactory, UserFactory
from .snippets import (
    DOCS,
    PAGES,
    ROOT,
    check_quickstart_project,
    fences,
    isolated_engine,
    python_blocks,
    quickstart_project,
    receivers_restored,
    run_block,
    run_page,
    run_quickstart_workflows,
)


def page(name):
    return (DOCS / name).read_text()


@pytest.fixture
def engine():
    """``get_engine()`` and ``django_workflows.registry`` on a fresh registry."""
    with isolated_engine(event_bus=InMemoryEventBus()) as engine:
        yield engine


def run_workflow_module(engine):
    """The quickstart's ``expenses/workflows.py``, run on the engine's registry."""
    namespace = run_quickstart_workflows()
    assert engine.registry.get_definition("expense_claim")
    return namespace


@pytest.fixture
def quickstart(engine):
    """The quickstart's ``expense_claim`` workflow, registered."""
    return run_workflow_module(engine)


# -- the distribution ---------------------------------------------------------------------


def test_the_distribution_has_a_name_of_its_own_and_links():
    """``pip install django-workflows`` installs another project (import package
    ``workflows``): ours is published as ``django-workflows-engine``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "django-workflows-engine"
    urls = project["urls"]
    assert set(urls) == {"Documentation", "Source", "Changelog", "Issues"}
    docs = urls["Documentation"]
    assert docs == "https://django-workflows-engine.readthedocs.io/en/latest/"
    assert urls["Changelog"] == f"{docs}changelog.html"
    assert urls["Source"] == "https://github.com/django-workflows/django-workflows"
    assert urls["Issues"] == f"{urls['Source']}/issues"
    for path in [ROOT / "README.md", *PAGES]:
        text = path.read_text()
        assert not re.search(r"pip install ['\"]?django-workflows(?![-\w])", text), path.name


# -- every Python block of the docs runs ----------------------------------------------------

# The fences the pages may use. Python is written in ```python blocks only, inline (no
# ``{literalinclude}``, which shows nothing on GitHub and PyPI), so that it runs below.
FENCES = {
    "python",
    "console",
    "sh",
    "text",
    "json",
    "{toctree}",
    "{include}",
    "{eval-rst}",  # autodoc
    "{openapi-endpoints}",  # docs/_ext
}


def _name(path):
    return path.relative_to(DOCS).as_posix() if path.is_relative_to(DOCS) else path.name


@contextlib.contextmanager
def expenses_app(engine):
    """``expenses.workflows``, the quickstart's module, importable meanwhile."""
    expenses = types.ModuleType("expenses")
    expenses.workflows = types.ModuleType("expenses.workflows")
    expenses.workflows.__dict__.update(run_workflow_module(engine))
    saved = {name: sys.modules.get(name) for name in ("expenses", "expenses.workflows")}
    sys.modules.update({"expenses": expenses, "expenses.workflows": expenses.workflows})
    try:
        yield expenses.workflows
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def waiting_at_a_timer(engine, first_day="2999-01-04"):
    """An instance of the concepts page's ``leave`` workflow, waiting at its timer."""
    run_page("concepts.md")
    instance = engine.start_workflow("leave", initial_data={"first_day": first_day})
    assert instance.status == WorkflowStatus.WAITING
    return instance


def tomorrow() -> str:
    return (timezone.now() + timedelta(days=1)).date().isoformat()


@contextlib.contextmanager
def _no_names(engine):
    yield {}, None


@contextlib.contextmanager
def _names(**names):
    yield names, None


@contextlib.contextmanager
def _operations_page(engine):
    """The tracing example sets the global tracer provider: restored afterwards."""
    from .observability import global_tracer_provider_restored

    with global_tracer_provider_restored():
        yield {}, None


@contextlib.contextmanager
def _admin_page(engine):
    run_workflow_module(engine)
    instance = engine.start_workflow("expense_claim", initial_data={"amount": 1})
    yield {"my_site": AdminSite(name="my_site"), "instance": instance}, None


@contextlib.contextmanager
def _testing_page(engine):
    def before(index, namespace):
        if index == 1:  # "Move the clock forward", in a test with its engine and instance
            namespace.update(engine=engine, instance=waiting_at_a_timer(engine, tomorrow()))

    with expenses_app(engine):
        yield {}, before


@contextlib.contextmanager
def _comments_page(engine):
    import tempfile

    from django.test import override_settings

    with tempfile.TemporaryDirectory() as media, override_settings(MEDIA_ROOT=media):
        managers = GroupFactory(name="managers")
        yield {"manager": UserFactory(groups=[managers]), "employee": UserFactory()}, None


# What a page's blocks use without defining it: (names, before) for ``run_page``.
PAGE_NAMES = {
    "README.md": lambda engine: _names(manager=UserFactory()),
    "quickstart.md": lambda engine: _names(
        employee=UserFactory(), manager=StaffFactory(is_superuser=True)
    ),
    "concepts.md": lambda engine: _names(payments=FakePayments()),
    "admin.md": _admin_page,
    "howto/idempotent-steps.md": lambda engine: _names(billing=FakeBilling()),
    "howto/timeouts.md": lambda engine: _names(rates_api=FakeRates()),
    "howto/monitor-events.md": lambda engine: _names(metrics=FakeMetrics()),
    "howto/testing.md": _testing_page,
    "howto/deadlines-and-notifications.md": lambda engine: _names(chat=FakeChat()),
    "howto/n-of-m-approvals.md": lambda engine: _names(
        alice=UserFactory(username="alice"),
        bob=UserFactory(username="bob"),
        carol=UserFactory(username="carol"),
    ),
    "howto/comments-and-bulk-approval.md": _comments_page,
    "operations.md": _operations_page,
}
# Pages about an optional backend: their blocks import its extra.
EXTRAS = {
    "backends/celery.md": "celery",
    "backends/saq.md": "saq",
    "backends/django-tasks.md": "django_tasks",
}
RUNNABLE = [path for path in PAGES if any(not b.fragment for b in python_blocks(path))]


def test_the_docs_write_python_inline_in_python_fences():
    for path in PAGES:
        assert "{literalinclude}" not in path.read_text(), f"{_name(path)}: write it inline"
        for info, line, _, _ in fences(path):
            kind = info.split()[0] if info else ""
            assert kind in FENCES, f"{_name(path)}:{line}: a ```{info} block"


def test_every_python_block_of_the_docs_parses():
    blocks = [block for path in PAGES for block in python_blocks(path)]
    assert len(blocks) > 30
    assert len([b for b in blocks if not b.fragment]) > 20
    for block in blocks:
        try:
            compile(block.code, block.where, "exec", ast.PyCF_ONLY_AST)
        except SyntaxError as exc:
            pytest.fail(f"{block.where}: {exc}\n{block.code}")


@pytest.mark.django_db
@pytest.mark.parametrize("path", RUNNABLE, ids=_name)
def test_every_python_block_runs(path, django_capture_on_commit_callbacks):
    """Each page's blocks, in order: a block that cannot run alone must be marked as a
    fragment (``<!-- fragment -->`` on the line before its fence)."""
    if _name(path) in EXTRAS:
        pytest.importorskip(EXTRAS[_name(path)], reason="the page's optional extra")
    setup = PAGE_NAMES.get(_name(path), _no_names)
    with (
        isolated_engine(event_bus=InMemoryEventBus()) as engine,
        receivers_restored(),
        setup(engine) as (names, before),
        django_capture_on_commit_callbacks(execute=True),
    ):
        run_page(path, before=before, **names)


def test_the_fragment_mark_is_seen():
    """The runner skips exactly the marked blocks: a settings excerpt that cannot run
    alone is marked, and the quickstart's workflow is not."""
    quickstart = python_blocks(DOCS / "quickstart.md")
    assert [b.fragment for b in quickstart] == [True, False, False, False]
    (settings,) = [b for b in python_blocks(DOCS / "settings.md") if "BASE_DIR" in b.code]
    assert settings.fragment
    with pytest.raises(NameError):
        exec(compile(settings.code, settings.where, "exec"), {})  # noqa: S102


# -- the README reads well on the package index -----------------------------------------------

PROJECT_URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
DOCS_URL = PROJECT_URLS["Documentation"]
SOURCE_URL = PROJECT_URLS["Source"]


def markdown_links(text):
    """The targets of inline links and images, reference definitions and HTML links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # not inside code blocks
    text = re.sub(r"`[^`\n]*`", "", text)
    return (
        re.findall(r"\]\(\s*<?([^)\s>]*)", text)
        + re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.M)
        + re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)""", text)
    )


def test_the_readme_has_no_relative_links():
    """PyPI renders the README without the repository around it: a relative link is dead."""
    links = markdown_links((ROOT / "README.md").read_text())
    assert len(links) > 20
    for link in links:
        assert link.startswith("https://"), f"README.md: a relative link: {link}"


def test_the_readme_links_point_at_pages_and_files_that_exist():
    blob = f"{SOURCE_URL}/blob/main/"
    for link in markdown_links((ROOT / "README.md").read_text()):
        target, _, anchor = link.partition("#")
        if target.startswith(DOCS_URL):
            page = target.removeprefix(DOCS_URL).removesuffix(".html") or "index"
            path = DOCS / f"{page}.md"
            assert path.is_file(), link
            if anchor:
                assert anchor in _anchors(path), link
        elif target.startswith(blob):
            assert (ROOT / target.removeprefix(blob)).exists(), link
        else:
            assert urlsplit(link).netloc not in {"", urlsplit(DOCS_URL).netloc}, link


def _anchors(path):
    """The anchors MyST gives a page's headings (``myst_heading_anchors``)."""
    headings = re.findall(r"^#{1,4} (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_the_quickstart_sets_up_a_working_project(tmp_path):
    """Followed literally (startproject, the settings and URLs it lists, its app and
    workflow), the quickstart gives a project that migrates, passes its checks, starts an
    instance, and serves the admin and the REST API as the page says."""
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL"}
        },
        "PYTHONPATH": str(ROOT),  # this checkout's django_workflows
    }
    site = quickstart_project(sys.executable, tmp_path, env)
    output = check_quickstart_project(sys.executable, site, env)
    assert f"package: {ROOT / 'django_workflows'}" in output


# -- the quickstart -----------------------------------------------------------------------


@pytest.mark.django_db
def test_quickstart_run_workflow_prints_what_the_page_shows(quickstart):
    shown = page("quickstart.md").split("$ python manage.py run_workflow expense_claim")[1]
    shown = shown.split("```")[0].splitlines()
    args = re.match(r" --data '(.*)'$", shown[0])
    out = io.StringIO()

    call_command("run_workflow", "expense_claim", "--data", args[1], stdout=out, no_color=True)

    def normal(lines):
        text = "\n".join(line for line in lines if line.strip())
        text = re.sub(r"instance: \S+", "instance: <id>", text)
        return re.sub(r"human task \d+", "human task <n>", text)

    assert normal(out.getvalue().splitlines()) == normal(shown[1:])
    instance = WorkflowInstance.objects.get()
    assert instance.context == {"amount": 120, "employee": "Ada", "submitted": True}


@pytest.mark.django_db
def test_quickstart_first_approval_in_the_admin(quickstart, client):
    """Step 7: a superuser approves in My tasks, and the instance completes."""
    call_command("run_workflow", "expense_claim", "--data", '{"amount": 120}', stdout=io.StringIO())
    task = HumanTask.objects.get()
    client.force_login(StaffFactory(username="admin", is_superuser=True))

    inbox = client.get("/admin/django_workflows/humantask/inbox/")
    assert "Approve the expense claim" in inbox.text
    complete = f"/admin/django_workflows/humantask/{task.pk}/complete/"
    form = client.get(complete)
    assert '"amount": 120' in html.unescape(form.text)
    assert 'value="Approve"' in form.text and 'value="Reject"' in form.text
    response = client.post(complete, {"comments": "Receipts checked", "_action": "Approve"})

    assert response.status_code == 302
    instance = WorkflowInstance.objects.get()
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["paid"] == 120
    assert instance.context["comments"] == "Receipts checked"
    detail = client.get(f"/admin/django_workflows/workflowinstance/{instance.pk}/change/")
    assert 'data-step="pay"' in detail.text


@pytest.mark.django_db
def test_quickstart_from_python(quickstart):
    # A task with neither assignee nor candidate groups: only a superuser (or a user with
    # complete_any_task) may complete it; staff status alone does not.
    ns = run_page(
        "quickstart.md",
        employee=UserFactory(),
        manager=StaffFactory(username="boss", is_superuser=True),
    )
    instance = ns["instance"]
    assert instance.business_key == "EXP-2024-001"
    assert instance.context["comments"] == "Receipts checked"
    assert HumanTask.objects.get().completed_by.username == "boss"


@pytest.mark.django_db
def test_quickstart_refuses_a_user_the_task_rule_does_not_allow(quickstart):
    """Without assignee or candidate groups only superusers (and complete_any_task) may."""
    from django.core.exceptions import PermissionDenied

    from django_workflows import get_engine

    instance = get_engine().start_workflow("expense_claim", initial_data={"amount": 5})
    with pytest.raises(PermissionDenied):
        get_engine().complete_human_task(
            instance.id, "approval", user_id=UserFactory(), action="Approve", check_permission=True
        )
    assert HumanTask.objects.get().status == "open"


# -- concepts -----------------------------------------------------------------------------


class FakePayments:
    def __init__(self):
        self.calls = []

    def charge(self, order_id, *, amount, idempotency_key):
        self.calls.append((order_id, amount, idempotency_key))
        return f"ch_{len(self.calls)}"


@pytest.mark.django_db
def test_concepts_machine_step(engine):
    from django_workflows import WorkflowDefinition

    payments = FakePayments()
    ns = run_page("concepts.md", payments=payments)
    charge = ns["Charge"]()
    assert charge.retry.max_attempts == 3 and charge.retry.delay(2) == 20
    engine.registry.register_definition(
        WorkflowDefinition(
            name="order", version="1", initial_step="charge", steps={"charge": charge}
        )
    )
    instance = engine.start_workflow("order", initial_data={"order_id": 7, "amount": 30})

    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["charge_id"] == "ch_1"
    assert payments.calls == [(7, 30, f"{instance.pk}:charge")]


@pytest.mark.django_db
def test_concepts_human_steps(engine, managers_group):
    from django_workflows import Edge, WorkflowDefinition

    ns = run_page("concepts.md")
    boss = UserFactory(groups=[managers_group])
    engine.registry.register_definition(
        WorkflowDefinition(
            name="leave_request",  # the page's "leave" is its timer example
            version="1",
            initial_step="request",
            steps={"request": ns["RequestLeave"](), "approve": ns["ManagerApproval"]()},
            edges=[Edge("request", "approve")],
        )
    )
    instance = engine.start_workflow("leave_request", initial_data={"manager_id": boss.pk})
    with pytest.raises(ValidationError):
        engine.complete_human_task(
            instance.id, "request", data={"first_day": "2025-06-02", "days": 40}
        )

    instance = engine.complete_human_task(
        instance.id, "request", data={"first_day": "2025-06-02", "days": "3", "note": "sea"}
    )
    # complete() stored two fields, the date as JSON text.
    assert instance.context == {"manager_id": boss.pk, "first_day": "2025-06-02", "days": 3}

    task = HumanTask.objects.get(step_name="approve")
    assert task.assignee == boss
    assert [group.name for group in task.candidate_groups.all()] == [managers_group.name]
    assert timedelta(days=2) - (task.due_at - timezone.now()) < timedelta(minutes=1)
    # Reject validates with its own form: comments, and no more.
    with pytest.raises(ValidationError, match="comments"):
        engine.complete_task(task.pk, user_id=boss, action="Reject", data={})
    instance = engine.complete_task(
        task.pk, user_id=boss, action="Approve", data={}, check_permission=True
    )
    assert instance.status == WorkflowStatus.COMPLETED
    assert instance.context["approved"] is True


@pytest.fixture
def managers_group(db):
    return GroupFactory(name="managers")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("weight", "route"),
    [(0.5, "express"), (None, "express"), (40, "freight"), (10, "standard")],
)
def test_concepts_exclusive_gateway(engine, weight, route):
    run_page("concepts.md")
    data = {} if weight is None else {"weight": weight}
    instance = engine.start_workflow("shipping", initial_data=data)
    assert instance.context == {**data, "shipped_by": route}


@pytest.mark.django_db
def test_concepts_timers(engine):
    ns = run_page("concepts.md")
    assert ns["cool_off"].duration == timedelta(hours=1)
    later = engine.start_workflow("leave", initial_data={"first_day": "2999-01-04"})
    past = engine.start_workflow("leave", initial_data={"first_day": "2020-01-06"})
    assert later.status == past.status == WorkflowStatus.WAITING  # a past due time waits too

    engine.run_due_timers()

    assert engine.get_instance(past.id).context["on_leave"] is True
    assert engine.get_instance(later.id).status == WorkflowStatus.WAITING
    timer = StepRun.objects.get(instance=later, step_name="wait")
    assert (timer.status, timer.due_at.year) == ("scheduled", 2999)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "taken"),
    [
        ({"score": 90}, {"approve", "file"}),
        ({"score": 10, "amount": 2000, "country": "DE"}, {"escalate", "file"}),
        ({"score": 10, "amount": 2000, "country": "US"}, {"file"}),
        ({"score": 80, "customer": {"tier": "gold"}}, {"approve", "vip", "file"}),
    ],
)
def test_concepts_conditions(engine, data, taken):
    run_page("concepts.md")
    instance = engine.start_workflow("review", initial_data=data)
    assert instance.status == WorkflowStatus.COMPLETED
    ran = set(instance.step_runs.values_list("step_name", flat=True)) - {"review"}
    assert ran == taken


@pytest.mark.django_db
def test_concepts_async_view(quickstart):
    ns = run_page("concepts.md")
    request = RequestFactory().post("/claims/", {"amount": "120"})
    response = async_to_sync(ns["start_claim"])(request)
    body = json.loads(response.content)
    assert body["status"] == "waiting"
    assert WorkflowInstance.objects.get(pk=body["id"]).context["amount"] == 120


@pytest.mark.django_db(transaction=True)
def test_execute_runs_outside_any_transaction(engine):
    """Concepts and guarantees: even when the caller is inside a transaction."""
    from django_workflows import BaseMachineStep, WorkflowDefinition

    seen = []

    class Probe(BaseMachineStep):
        def execute(self, context):
            seen.append(connection.in_atomic_block)

    engine.registry.register_definition(
        WorkflowDefinition(name="probe", version="1", initial_step="p", steps={"p": Probe()})
    )
    with transaction.atomic():
        instance = engine.start_workflow("probe")
        assert seen == []
        assert instance.status == WorkflowStatus.RUNNING
    assert seen == [False]
    assert engine.get_instance(instance.id).status == WorkflowStatus.COMPLETED
    engine.start_workflow("probe")
    assert seen == [False, False]


# -- how-to guides ------------------------------------------------------------------------


class FakeBilling:
    """Creates one invoice per idempotency key; the first call fails after creating it."""

    def __init__(self):
        self.invoices, self.calls = {}, 0

    def create_invoice(self, *, customer, amount, idempotency_key):
        self.calls += 1
        invoice = self.invoices.setdefault(idempotency_key, {"id": f"inv_{len(self.invoices) + 1}"})
        if self.calls == 1:
            raise ConnectionError("the answer was lost")
        return invoice


@pytest.mark.django_db
def test_howto_idempotent_steps(engine):
    from django_workflows import WorkflowDefinition

    billing = FakeBilling()
    ns = run_page("howto/idempotent-steps.md", billing=billing)
    engine.registry.register_definition(
        WorkflowDefinition(
            name="bill", version="1", initial_step="send", steps={"send": ns["SendInvoice"]()}
        )
    )
    instance = engine.start_workflow("bill", initial_data={"customer": "ACME", "amount": 99})
    assert instance.status == WorkflowStatus.RUNNING  # a retry after 30 s

    StepRun.objects.update(due_at=Now())
    engine.run_due_timers()

    instance = engine.get_instance(instance.id)
    assert instance.status == WorkflowStatus.COMPLETED
    assert billing.calls == 2
    assert list(billing.invoices) == [f"{instance.pk}:send"]
    assert instance.context["invoice_id"] == "inv_1"


class FakeRates:
    def __init__(self, delay=0.0):
        self.delay = delay

    def latest(self, timeout):
        import time

        time.sleep(self.delay)
        return {"EUR": 0.92}


@pytest.mark.django_db
def test_howto_timeouts(engine):
    from django_workflows import Edge, RetryPolicy, WorkflowDefinition

    ns = run_page("howto/timeouts.md", rates_api=FakeRates())
    fetch = ns["FetchRates"]
    assert fetch.timeout == 10
    assert [fetch.retry.delay(n) for n in (1, 2)] == [5, 10]  # "after 5 seconds, then 10"

    class Impatient(fetch):
        timeout = 0.2
        retry = RetryPolicy(max_attempts=1)

    engine.registry.register_definition(
        WorkflowDefinition(
            name="rates",
            version="1",
            initial_step="fetch",
            steps={"fetch": fetch(), "approve": ns["ApproveOrder"]()},
            edges=[Edge("fetch", "approve")],
        )
    )
    engine.registry.register_definition(
        WorkflowDefinition(
            name="slow", version="1", initial_step="fetch", steps={"fetch": Impatient()}
        )
    )
    instance = engine.start_workflow("rates")
    assert instance.context == {"eur_rate": 0.92}
    assert list(ns["overdue_tasks"]()) == []
    HumanTask.objects.update(due_at=timezone.now() - timedelta(hours=1))
    assert [task.instance for task in ns["overdue_tasks"]()] == [instance]

    ns["rates_api"].delay = 1.0
    failed = engine.start_workflow("slow")
    assert failed.status == WorkflowStatus.FAILED
    assert failed.error.startswith("TimeoutError")


@pytest.mark.django_db
def test_howto_new_version(engine):
    ns = run_page("howto/new-version.md")
    approver = StaffFactory()
    old = engine.start_workflow("payment", version="1.0.0")
    new = engine.start_workflow("payment")
    assert new.definition.version == "2.0.0"
    assert ns["open_instances"]("payment", "1.0.0").get() == old

    old = engine.complete_human_task(old.id, "approval", user_id=approver)
    new = engine.complete_human_task(new.id, "approval", user_id=approver)

    assert old.context == {"paid": True}  # the old graph: no notify
    assert new.context == {"paid": True, "notified": True}
    assert not ns["open_instances"]("payment", "1.0.0").exists()
    assert DefinitionVersion.objects.filter(name="payment").count() == 2


@pytest.mark.django_db
def test_howto_new_version_a_changed_graph_under_the_same_version_is_refused(engine):
    """ "If you change a graph without a new version": E002, and nothing moves."""
    from django.core.checks import run_checks

    from django_workflows import BaseHumanStep, DefinitionError, Edge, WorkflowDefinition
    from django_workflows import registry as project_registry

    run_page("howto/new-version.md")
    waiting = engine.start_workflow("payment", version="1.0.0")
    engine.registry.unregister("payment", "1.0.0")
    engine.registry.register_definition(
        WorkflowDefinition(
            name="payment",
            version="1.0.0",
            initial_step="approval",
            steps={"approval": BaseHumanStep(), "other": BaseHumanStep()},
            edges=[Edge("approval", "other")],
        )
    )
    assert project_registry is engine.registry
    errors = [e.id for e in run_checks(tags=["database"], databases=["default"])]
    assert "django_workflows.E002" in errors
    with pytest.raises(DefinitionError):
        engine.complete_human_task(waiting.id, "approval", user_id=StaffFactory())
    assert engine.cancel_workflow(waiting.id).status == WorkflowStatus.CANCELED


class FakeChat:
    def __init__(self):
        self.posts = []

    def post(self, channel, text):
        self.posts.append((channel, text))


@pytest.mark.django_db(transaction=True)  # each transition's events delivered at its commit
def test_howto_deadlines_and_notifications(settings, mailoutbox):
    """The page's workflow reminds twice and escalates on day 3; the channel hears of
    each, and with the page's settings the people are mailed."""
    settings.DJANGO_WORKFLOWS = {
        **settings.DJANGO_WORKFLOWS,
        "NOTIFY_BY_EMAIL": True,
        "SITE_URL": "https://intranet.example.com",
    }
    manager = UserFactory(groups=[GroupFactory(name="managers")])
    director = UserFactory(groups=[GroupFactory(name="finance-directors")])
    chat = FakeChat()
    with isolated_engine(event_bus=InMemoryEventBus()), receivers_restored():
        ns = run_page("howto/deadlines-and-notifications.md", chat=chat)
    task = ns["task"]
    link = f"https://intranet.example.com/workflows/tasks/{task.pk}/"  # the app's page, routed
    assert chat.posts == [
        ("#approvals", f"Reminder 1: Approve the expense {link}"),
        ("#approvals", f"Reminder 2: Approve the expense {link}"),
        ("#approvals", f"Escalated to finance-directors: Approve the expense {link}"),
    ]
    assert [(m.to, m.subject) for m in mailoutbox] == [
        ([manager.email], "New task: Approve the expense (Ann: 120 EUR)"),
        ([manager.email], "Reminder: Approve the expense (Ann: 120 EUR)"),
        ([manager.email], "Reminder: Approve the expense (Ann: 120 EUR)"),
        ([director.email], "Escalated to you: Approve the expense (Ann: 120 EUR)"),
    ]
    step = ns["ApproveByDepartment"]()
    context = types.SimpleNamespace(get=lambda key, default=None: "sales")
    assert step.get_escalate_to(context) == ["sales-heads"]


class FakeMetrics:
    def __init__(self):
        self.counts = {}

    def increment(self, name, tags):
        self.counts[name, tags["workflow"]] = self.counts.get((name, tags["workflow"]), 0) + 1


@pytest.mark.django_db
def test_howto_monitor_with_events(caplog, django_capture_on_commit_callbacks):
    from django_workflows import BaseMachineStep, WorkflowDefinition

    metrics = FakeMetrics()
    ns = run_page("howto/monitor-events.md", metrics=metrics)
    try:

        class Broken(BaseMachineStep):
            def execute(self, context):
                raise RuntimeError("card declined")

        with isolated_engine(event_bus=ns["MetricsBus"]()) as engine:
            engine.registry.register_definition(
                WorkflowDefinition(name="pay", version="1", initial_step="s", steps={"s": Broken()})
            )
            since = timezone.now()
            with (
                caplog.at_level(logging.ERROR, logger="myproject.workflows"),
                django_capture_on_commit_callbacks(execute=True),
            ):
                instance = engine.start_workflow("pay")
    finally:
        workflow_event.disconnect(ns["alert_on_failure"], sender=ns["WorkflowFailed"])

    assert metrics.counts == {
        ("workflow.WorkflowStarted", "pay"): 1,
        ("workflow.StepExecuted", "pay"): 1,
        ("workflow.WorkflowFailed", "pay"): 1,
    }
    assert f"instance {instance.pk}) failed at s: RuntimeError: card declined" in caplog.text
    assert [event.instance for event in ns["failures_since"](since)] == [instance]


# -- examples written inline --------------------------------------------------------------


@pytest.mark.django_db
def test_readme_example(engine):
    ns = run_page("README.md", manager=UserFactory())
    assert ns["instance"].context == {"amount": 500, "approved": True, "paid": 500}


@pytest.mark.django_db
def test_admin_graph_example(engine, quickstart):
    instance = engine.start_workflow("expense_claim", initial_data={"amount": 1})
    my_site = AdminSite(name="my_site")
    ns = run_page("admin.md", instance=instance, my_site=my_site)
    assert my_site.is_registered(WorkflowInstance) and my_site.is_registered(HumanTask)
    assert ns["svg"].startswith("<svg")
    assert 'data-step="approval" data-state="current"' in ns["svg"]


@pytest.mark.django_db
def test_signals_example(engine, quickstart, capsys, django_capture_on_commit_callbacks):
    with receivers_restored():
        ns = run_page("reference/signals.md")  # a weak receiver: keep the namespace
        with django_capture_on_commit_callbacks(execute=True):
            instance = engine.start_workflow("expense_claim", initial_data={"amount": 1})
            engine.complete_human_task(instance.id, "approval", action="Reject")
    assert capsys.readouterr().out == f"completed: expense_claim {instance.pk}\n"
    assert ns["on_completed"]


@pytest.mark.django_db
def test_api_approval_flow_as_documented(managers_group):
    """The curl session of docs/api.md, on the demo's expense_approval workflow."""
    ada = UserFactory(username="ada")
    bob = UserFactory(username="bob", groups=[managers_group])
    employee, manager = APIClient(), APIClient()
    employee.force_authenticate(ada)
    manager.force_authenticate(bob)
    api = "/api/workflows"
    body = {"workflow": "expense_approval", "data": {"amount": 120, "employee": "Ada"}}

    started = employee.post(
        f"{api}/instances/", {**body, "business_key": "claim-42"}, format="json"
    )
    assert started.status_code == 201
    assert started.json()["context"] == {"amount": 120, "employee": "Ada", "submitted": True}
    again = employee.post(f"{api}/instances/", {**body, "business_key": "claim-42"}, format="json")
    assert (again.status_code, again.json()["id"]) == (200, started.json()["id"])

    (task,) = manager.get(f"{api}/tasks/").json()["results"]
    detail = manager.get(f"{api}/tasks/{task['id']}/").json()
    assert detail["actions"] == ["Approve", "Reject"]
    assert detail["form_schema"]["properties"]["comments"] == {
        "title": "Comments",
        "type": "string",
    }
    refused = employee.post(
        f"{api}/tasks/{task['id']}/complete/", {"action": "Approve"}, format="json"
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")

    done = manager.post(
        f"{api}/tasks/{task['id']}/complete/",
        {"data": {"comments": "Fine."}, "action": "Approve"},
        format="json",
    )
    assert done.json()["status"] == "completed"
    assert done.json()["context"]["paid"] == 120
    twice = manager.post(
        f"{api}/tasks/{task['id']}/complete/", {"action": "Approve"}, format="json"
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "task_not_open")
    mine = employee.get(f"{api}/instances/?started_by=me&status=completed").json()
    assert mine["count"] == 1
    events = [
        e["type"] for e in employee.get(f"{api}/instances/{started.json()['id']}/").json()["events"]
    ]
    assert events == [
        "WorkflowStarted",
        "StepExecuted",
        "HumanTaskCreated",
        "HumanTaskCompleted",
        "StepExecuted",
        "WorkflowCompleted",
    ]


# -- the reference pages list what the code has -------------------------------------------


def _literal(value):
    return f'"{value}"' if isinstance(value, str) else repr(value)


def test_settings_page_lists_every_key_with_its_default():
    text = page("settings.md")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)`", text, re.M))
    documented = {key: value for key, value in rows.items() if not key.startswith("WORKFLOWS_")}
    assert documented == {key: _literal(value) for key, value in conf.DEFAULTS.items()}


def test_settings_page_lists_the_contrib_settings():
    text = page("settings.md")
    used = set()
    for path in (ROOT / "django_workflows" / "contrib").rglob("*.py"):
        used |= set(re.findall(r'backend_setting\("([A-Z_]+)"\)', path.read_text()))
    assert used == {"CELERY_APP", "SAQ_URL", "SAQ_QUEUE"}
    for name in used:
        assert f"| `{name}` |" in text
        assert f"`WORKFLOWS_{name}`" in text  # the deprecated name, still read


def test_python_api_page_explains_every_engine_method():
    text = page("reference.md")
    methods = [
        name
        for name, value in vars(BaseExecutionEngine).items()
        if callable(value) and not name.startswith("_") and not name.startswith("a")
    ]
    assert "claim_task" in methods and "get_or_start_workflow" in methods
    for name in methods:
        if name in {"dispatch", "executes_inline"}:
            assert f"`{name}" in text, name
        else:
            assert f"#### `{name}(" in text, name
    for name in vars(BaseExecutionEngine):
        if name.startswith("a") and name[1:] in methods:
            assert f"`{name}`" in text, name
    signature = (
        "#### `complete_task(task_id, user_id=None, data=None, *, action=None, "
        'check_permission=False, comment="")`'
    )
    assert signature in text


def test_checks_page_lists_every_check_id():
    ids = set(
        re.findall(
            r'id="(django_workflows\.[EW]\d+)"',
            (ROOT / "django_workflows" / "checks.py").read_text(),
        )
    )
    assert ids == {
        "django_workflows.E001",
        "django_workflows.E002",
        "django_workflows.E003",
        "django_workflows.E004",
        "django_workflows.E005",
        "django_workflows.E006",
        "django_workflows.E007",
        "django_workflows.W001",
        "django_workflows.W101",
        "django_workflows.W102",
    }
    text = page("reference/checks.md")
    assert set(re.findall(r"`(django_workflows\.[EW]\d+)`", text)) == ids


def test_commands_page_lists_every_command_and_option():
    from django.core.management import get_commands, load_command_class

    text = page("reference/commands.md")
    commands = sorted(n for n, app in get_commands().items() if app == "django_workflows")
    assert commands == [
        "run_workflow",
        "workflow_export",
        "workflow_migrate",
        "workflow_purge",
        "workflow_sweep",
    ]
    for name in commands:
        assert f"## `{name}`" in text
        parser = load_command_class("django_workflows", name).create_parser("manage.py", name)
        options = [
            option
            for action in parser._actions
            if action.dest not in BASE_OPTIONS
            for option in action.option_strings
            if option.startswith("--")
        ]
        assert options
        for option in options:
            assert f"`{option}" in text, f"{name} {option}"


BASE_OPTIONS = {
    "help",
    "verbosity",
    "settings",
    "pythonpath",
    "traceback",
    "no_color",
    "force_color",
    "skip_checks",
}


def test_models_page_lists_every_field():
    text = page("reference/models.md")
    for model in (
        DefinitionVersion,
        WorkflowInstance,
        StepRun,
        HumanTask,
        HumanTaskGroup,
        WorkflowEvent,
        IdempotencyKey,
        Substitution,
        Comment,
        WorkflowSignal,
    ):
        assert f"## `{model.__name__}`" in text
        section = text.split(f"## `{model.__name__}`")[1].split("\n## ")[0]
        for field in model._meta.get_fields():
            if (field.concrete or field.many_to_many) and not field.auto_created:
                assert f"`{field.name}`" in section, f"{model.__name__}.{field.name}"
    sources = ("models.py", "signal_models.py", "people_models.py")
    for index in re.findall(
        r'name="(dwf_[a-z_]+)"',
        "".join((ROOT / "django_workflows" / name).read_text() for name in sources),
    ):
        assert f"`{index}`" in text, index


def test_signals_page_lists_every_event():
    text = page("reference/signals.md")
    for name, cls in EVENT_TYPES.items():
        row = re.search(rf"^\| `{name}` \|(.*)$", text, re.M)
        assert row, name
        extra = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in {"instance_id", "workflow_name", "workflow_version", "timestamp"}
        ]
        for field in extra:
            assert f"`{field}`" in row[1], f"{name}.{field}"


@pytest.mark.django_db
def test_howto_testing_makes_a_timer_due(engine):
    instance = waiting_at_a_timer(engine, tomorrow())
    engine.run_due_timers()
    assert engine.get_instance(instance.id).status == WorkflowStatus.WAITING
    timer = python_blocks(DOCS / "howto" / "testing.md")[1]
    assert "advance_time" in timer.code

    run_block(timer, {"instance": instance, "engine": engine})

    assert engine.get_instance(instance.id).context["on_leave"] is True
