"""OpenTelemetry spans, captured with the SDK's in-memory exporter: transitions and
steps, their attributes, parents across the local engine and across a queue."""

import contextlib
import io
import json

import pytest
from django_q.models import OrmQ
from django_q.signing import SignedPackage
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.trace import StatusCode

from django_workflows import (
    BaseMachineStep,
    Edge,
    RetryPolicy,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
    tracing,
)
from django_workflows import engine as engine_package
from django_workflows.contrib import jobs
from django_workflows.engine import LocalExecutionEngine
from django_workflows.engine import djangoq as djangoq_module
from django_workflows.engine.djangoq import DjangoQExecutionEngine
from django_workflows.engine.queued import QueueExecutionEngine

from . import workflows
from .observability import global_tracer_provider_restored, spans_in_memory, workflow_settings
from .snippets import isolated_engine, run_page

pytestmark = pytest.mark.django_db

USER_TRACER = {}


class ChargeCard(BaseMachineStep):
    """Makes a span of its own inside execute()."""

    def execute(self, context):
        with USER_TRACER["tracer"].start_as_current_span("charge card") as span:
            span.set_attribute("amount", context.get("amount", 0))
        context.set("charged", True)


class Flaky(BaseMachineStep):
    retry = RetryPolicy(max_attempts=2)

    def execute(self, context):
        if context.attempt == 1:
            raise RuntimeError("try again")


def registry():
    reg = WorkflowRegistry()
    reg.register_definition(workflows.parallel_notifications())
    reg.register_definition(
        WorkflowDefinition(
            name="pay",
            version="2",
            initial_step="charge",
            steps={"charge": ChargeCard(), "flaky": Flaky(), "receipt": workflows.Record()},
            edges=[Edge("charge", "flaky"), Edge("flaky", "receipt")],
        )
    )
    return reg


@contextlib.contextmanager
def default_engine(engine):
    """``get_engine()`` returns ``engine`` meanwhile (as in a worker process)."""
    saved = engine_package._default
    engine_package._default = engine
    try:
        yield
    finally:
        engine_package._default = saved


@pytest.fixture
def spans():
    with spans_in_memory() as exporter:
        USER_TRACER["tracer"] = exporter.provider.get_tracer("my.app")
        yield exporter


def by_name(exporter):
    found = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span, exporter):
    (parent,) = [
        s for s in exporter.get_finished_spans() if s.context.span_id == span.parent.span_id
    ]
    return parent


def test_spans_of_transitions_and_steps_with_their_attributes(spans):
    engine = LocalExecutionEngine(registry())
    instance = engine.start_workflow("pay", initial_data={"amount": 30})
    assert instance.status == WorkflowStatus.COMPLETED

    found = by_name(spans)
    (start,) = found["workflow transition start"]
    (charge,) = found["workflow step charge"]
    assert start.parent is None  # nothing around the call: a trace starts here
    assert dict(start.attributes) == {
        "workflow.name": "pay",
        "workflow.version": "2",
        "workflow.instance_id": str(instance.pk),
    }
    assert dict(charge.attributes) == {
        "workflow.name": "pay",
        "workflow.version": "2",
        "workflow.step": "charge",
        "workflow.attempt": 1,
        "workflow.instance_id": str(instance.pk),
    }
    # The step's parent is the transition that made it runnable.
    assert charge.parent.span_id == start.context.span_id
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {start.context.trace_id}
    # The user's span inside execute() nests under the step's.
    (user,) = found["charge card"]
    assert user.parent.span_id == charge.context.span_id
    assert user.attributes["amount"] == 30
    # The transition committing the step's outcome is a child of the step's span, and
    # the next step a child of that transition: the trace follows the chain.
    finish = parent_of(found["workflow step flaky"][0], spans)
    assert finish.name == "workflow transition finish"
    assert finish.parent.span_id == charge.context.span_id
    assert [e.name for e in finish.events] == []  # a completion is its step span's end
    assert finish.attributes["workflow.instance_id"] == str(instance.pk)


def test_a_failed_attempt_marks_its_spans_and_the_retry_follows_it(spans):
    engine = LocalExecutionEngine(registry())
    engine.start_workflow("pay")

    first, second = sorted(
        by_name(spans)["workflow step flaky"], key=lambda s: s.attributes["workflow.attempt"]
    )
    assert first.attributes["workflow.attempt"] == 1
    assert first.status.status_code == StatusCode.ERROR
    assert "try again" in first.status.description
    assert second.status.status_code == StatusCode.UNSET
    fail = parent_of(second, spans)  # the retry was queued by the failing transition
    assert fail.name == "workflow transition fail"
    assert fail.parent.span_id == first.context.span_id
    assert fail.status.status_code == StatusCode.ERROR
    assert [(e.name, e.attributes["workflow.step"]) for e in fail.events] == [
        ("StepExecuted", "flaky")
    ]
    assert fail.attributes["workflow.status"] == "retrying"


class FakeQueue(QueueExecutionEngine):
    """A queue that keeps its messages: (run id, *extra arguments)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages = []

    def send(self, run_id):
        self.messages.append((run_id, *tracing.message_args(run_id)))


def test_across_a_queue_the_step_span_is_a_child_of_the_span_that_queued_it(
    spans, django_capture_on_commit_callbacks
):
    web = FakeQueue(registry())
    with (
        USER_TRACER["tracer"].start_as_current_span("POST /orders") as request,
        django_capture_on_commit_callbacks(execute=True),  # sent after commit
    ):
        web.start_workflow("notifications")
    ((run_id, traceparent),) = web.messages
    start = by_name(spans)["workflow transition start"][0]
    assert start.parent.span_id == request.get_span_context().span_id
    trace_id = f"{start.context.trace_id:032x}"
    version, trace, parent, flags = traceparent.split("-")  # W3C trace context
    assert (version, trace, parent) == ("00", trace_id, f"{start.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled

    # A worker process: the message's arguments, through the backends' job.
    worker = FakeQueue(registry())
    with default_engine(worker), django_capture_on_commit_callbacks(execute=True):
        jobs.run_step(run_id, traceparent)
    (step,) = by_name(spans)["workflow step start"]
    assert step.parent.span_id == start.context.span_id
    assert step.context.trace_id == start.context.trace_id
    # Of the three branches its finishing transition made runnable, the worker goes on
    # with one (chained: a child of that transition too) and queues two, carrying it.
    (finish,) = [
        s
        for s in by_name(spans)["workflow transition finish"]
        if s.parent.span_id == step.context.span_id
    ]
    branches = [s for name, found in by_name(spans).items() if "notify" in name for s in found]
    assert len(branches) == 1
    assert branches[0].parent.span_id == finish.context.span_id
    assert len(worker.messages) == 2
    for _run, carried in worker.messages:
        assert carried.split("-")[1:3] == [trace_id, f"{finish.context.span_id:016x}"]
    # Without a span to continue, a message is what it was without tracing.
    assert tracing.message_args(10**9) == ()


def test_the_django_q_message_carries_the_traceparent(spans):
    engine = DjangoQExecutionEngine(registry())
    with default_engine(engine):
        instance = engine.start_workflow("pay", initial_data={"amount": 1})
        (message,) = OrmQ.objects.all()
        task = SignedPackage.loads(message.payload)
        assert task["func"] == djangoq_module.RUN_STEP
        run_id, traceparent = task["args"]
        start = by_name(spans)["workflow transition start"][0]
        assert traceparent.split("-")[2] == f"{start.context.span_id:016x}"
        djangoq_module.run_step(*task["args"])  # as the qcluster worker calls it
    assert run_id == instance.step_runs.get(step_name="charge").pk
    (charge,) = by_name(spans)["workflow step charge"]
    assert charge.parent.span_id == start.context.span_id


def test_off_without_a_tracer_provider_or_with_the_setting_off(spans):
    with workflow_settings(TRACING=False):
        assert tracing.transition_span("start", None) is tracing.NULL
        assert tracing.message_args(1) == ()
        assert tracing.remote_parent("00-" + "1" * 32 + "-" + "2" * 16 + "-01") is tracing.NULL
        LocalExecutionEngine(registry()).start_workflow("pay")
    (user,) = spans.get_finished_spans()  # only the step's own span, a root
    assert (user.name, user.parent) == ("charge card", None)
    tracing.refresh()  # the global provider: none is set in the tests
    assert not tracing.tracing_on()
    with workflow_settings(METRICS=False):
        assert tracing.step_span((None, None)) is tracing.NULL


def test_the_console_exporter_example_of_the_docs(monkeypatch, django_capture_on_commit_callbacks):
    # The exporter writes to sys.stdout as it was when it was imported: here, to ``out``.
    out = io.StringIO()
    service, _, formatter = ConsoleSpanExporter.__init__.__defaults__
    monkeypatch.setattr(ConsoleSpanExporter.__init__, "__defaults__", (service, out, formatter))
    with (
        isolated_engine(),
        global_tracer_provider_restored(),
        django_capture_on_commit_callbacks(execute=True),
    ):
        run_page("operations.md")
    out, decoder, found = out.getvalue(), json.JSONDecoder(), []
    at = out.index("{")
    while at < len(out):  # the exporter prints one JSON object per span
        span, at = decoder.raw_decode(out, at)
        found.append(span)
        while at < len(out) and out[at].isspace():
            at += 1
    names = [s["name"] for s in found]
    assert sorted(names) == [
        "call the payment service",
        "workflow step charge",
        "workflow step receipt",
        "workflow transition finish",  # charge's
        "workflow transition finish",  # receipt's
        "workflow transition start",
    ]
    assert len({s["context"]["trace_id"] for s in found}) == 1  # one trace
    spans = {s["name"]: s for s in found if s["name"] != "workflow transition finish"}
    ids = {name: s["context"]["span_id"] for name, s in spans.items()}
    assert spans["call the payment service"]["parent_id"] == ids["workflow step charge"]
    assert spans["workflow step charge"]["parent_id"] == ids["workflow transition start"]
    children = {s["name"]: s for s in found if s["parent_id"] == ids["workflow step charge"]}
    assert set(children) == {"call the payment service", "workflow transition finish"}
    finish = children["workflow transition finish"]
    assert spans["workflow step receipt"]["parent_id"] == finish["context"]["span_id"]
    assert spans["workflow step charge"]["attributes"]["workflow.name"] == "billing"
    resource = spans["workflow step receipt"]["resource"]["attributes"]
    assert resource["service.name"] == "approvals"


def test_step_transitions_as_events_of_the_step_span(spans):
    with workflow_settings(TRACE_STEP_TRANSITIONS=False):
        tracing.refresh(tracer_provider=spans.provider)
        LocalExecutionEngine(registry()).start_workflow("pay")

    found = by_name(spans)
    assert sorted(found) == [
        "charge card",
        "workflow step charge",
        "workflow step flaky",
        "workflow step receipt",
        "workflow transition start",
    ]
    (charge,) = found["workflow step charge"]
    first, second = sorted(
        found["workflow step flaky"], key=lambda s: s.attributes["workflow.attempt"]
    )
    (receipt,) = found["workflow step receipt"]
    assert [e.name for e in charge.events] == ["transition finish"]
    assert first.parent.span_id == charge.context.span_id  # chained: the step queued it
    assert [e.name for e in first.events] == ["transition fail", "StepExecuted"]
    assert first.status.status_code == StatusCode.ERROR
    assert second.parent.span_id == first.context.span_id  # the retry
    assert receipt.parent.span_id == second.context.span_id


def test_a_celery_message_carries_the_traceparent(
    spans, django_capture_on_commit_callbacks, monkeypatch
):
    celery = pytest.importorskip("celery")
    from django_workflows.contrib.celery import CeleryExecutionEngine

    app = celery.Celery("recording", set_as_current=False)
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **options: sent.append(options["args"]))
    engine = CeleryExecutionEngine(registry(), celery_app=app)
    with django_capture_on_commit_callbacks(execute=True):
        instance = engine.start_workflow("pay")
    ((run_id, traceparent),) = sent
    (start,) = by_name(spans)["workflow transition start"]
    assert run_id == instance.step_runs.get().pk
    assert traceparent.split("-")[2] == f"{start.context.span_id:016x}"
