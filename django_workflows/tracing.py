"""OpenTelemetry spans of transitions and machine steps, and the step hook of the metrics.

The engine calls four hooks: ``transition_span`` around each transition (lock, plan,
write, commit), ``step_span`` around each machine step (its ``execute()`` and the
transition that commits its outcome), ``message_args`` when it puts a step run on a
queue and ``remote_parent`` in the worker that takes it. Whether they do anything is
decided at the first hook (again after ``refresh()`` or a change of the
``DJANGO_WORKFLOWS`` setting), and held in module flags:

- spans, when ``opentelemetry-api`` is installed (extra ``tracing``), the ``TRACING``
  setting is on and a tracer provider is set (the user's SDK: ``trace.set_tracer_provider``
  or the ``opentelemetry-instrument`` launcher); ``refresh(tracer_provider=...)`` names
  one instead. While none is set, each hook looks whether one was (a dict lookup);
- the step metrics (``metrics.py``: step duration, queue delay), when ``prometheus_client``
  is installed (extra ``metrics``) and the ``METRICS`` setting is on.

Otherwise each hook returns a shared do-nothing object: a function call and a flag test.

A step span's parent is the span of the transition that made the step runnable: in this
process through ``_origins`` (run id -> that span's context, remembered when the
transition ends), across a queue through a W3C ``traceparent`` string that the message
carries as an optional second argument (only when there is a span to continue).
"""

from __future__ import annotations

import contextvars
import threading
from datetime import datetime
from time import perf_counter
from typing import Any

from django.core.signals import setting_changed

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: every hook is a no-op
    trace = None  # type: ignore[assignment]

#: None until decided; then whether any hook does something.
ACTIVE: bool | None = None
#: Spans would be on but no tracer provider is set yet: the hooks look for one.
_waiting = False
_tracer: Any = None  # an OpenTelemetry tracer, when spans are on
_metrics: Any = None  # metrics.StepMetrics, when the step metrics are on
_step_transitions = True  # TRACE_STEP_TRANSITIONS: a step's own transition gets a span
_provider: Any = None  # a tracer provider named by refresh(), else the global one

#: Run id -> the context of the transition span that made it runnable (this process).
_origins: dict[int, Any] = {}
ORIGINS_LIMIT = 10_000
#: The step span being executed on this thread (a transition marks it failed).
_current_step: contextvars.ContextVar[StepSpan | None] = contextvars.ContextVar(
    "django_workflows_step_span", default=None
)
_lock = threading.Lock()
TRACEPARENT = "traceparent"


def _decide() -> bool:
    global ACTIVE, _tracer, _metrics, _waiting, _step_transitions
    from . import metrics
    from .conf import workflow_settings

    with _lock:
        tracer = None
        wanted = trace is not None and workflow_settings.TRACING
        if wanted:
            provider = _provider if _provider is not None else trace.get_tracer_provider()
            if _is_set(provider):
                tracer = provider.get_tracer("django_workflows")
        _tracer = tracer
        _waiting = wanted and tracer is None
        _step_transitions = bool(workflow_settings.TRACE_STEP_TRANSITIONS)
        _metrics = metrics.step_metrics()
        ACTIVE = _tracer is not None or _metrics is not None
        return ACTIVE


def _is_set(provider: Any) -> bool:
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def _on() -> bool:
    """Whether any hook is on: decided at the first hook, and again once a tracer
    provider appears (``trace.set_tracer_provider``) while spans wait for one."""
    if ACTIVE is None or (_waiting and _is_set(trace.get_tracer_provider())):
        return _decide()
    return ACTIVE


def refresh(tracer_provider: Any = None) -> bool:
    """Decide again whether the hooks trace and measure (after setting a tracer provider
    late, for example); ``tracer_provider`` is used instead of the global one if given.
    Returns whether any hook is on."""
    global _provider
    _provider = tracer_provider
    _origins.clear()
    return _decide()


def reset() -> None:
    """Forget the decision: the next hook decides again (reads the settings, looks for
    a tracer provider). ``refresh()`` decides at once."""
    global ACTIVE, _provider
    ACTIVE, _provider = None, None
    _origins.clear()


def recorder() -> Any:
    """The step metrics (``metrics.StepMetrics``) when metrics are on, else None."""
    _on()
    return _metrics


def tracing_on() -> bool:
    """Whether spans are made (deciding now if not yet decided)."""
    _on()
    return _tracer is not None


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    global ACTIVE
    if setting == "DJANGO_WORKFLOWS":
        ACTIVE = None


setting_changed.connect(_on_setting_changed)


# -- the do-nothing hook -------------------------------------------------------------


class _Null:
    """What every hook returns when off: enters and leaves, does nothing."""

    __slots__ = ()

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def describe(self, tx: Any) -> None:
        return None


NULL = _Null()


# -- transitions -----------------------------------------------------------------------


def transition_span(kind: Any, instance_id: Any, tx: Any = None) -> Any:
    """A span around one transition (``with``; ``.describe(tx)`` once the instance is
    locked). ``kind`` names it: a string, or the transition's body function."""
    if (ACTIVE is False and not _waiting) or not _on() or _tracer is None:
        return NULL
    if not _step_transitions:
        step = _current_step.get()
        if step is not None:  # the step's own finish or fail: an event on its span
            return StepTransition(step, kind, tx)
    return TransitionSpan(kind, instance_id, tx)


def _instance_attributes(instance: Any) -> dict[str, Any]:
    definition = instance.definition
    return {
        "workflow.name": definition.name,
        "workflow.version": definition.version,
        "workflow.instance_id": str(instance.pk),
    }


def _kind(kind: Any) -> str:
    if isinstance(kind, str):
        return kind
    name = getattr(kind, "__qualname__", "") or "transition"
    return name.split(".", 1)[0]  # "finish.<locals>.body" -> "finish"


class TransitionSpan:
    __slots__ = ("instance_id", "kind", "span", "token", "tx")

    def __init__(self, kind: Any, instance_id: Any, tx: Any) -> None:
        self.kind, self.instance_id, self.tx = kind, instance_id, tx
        self.span: Any = None
        self.token: Any = None

    def __enter__(self) -> TransitionSpan:
        kind = _kind(self.kind)
        tx, instance_id = self.tx, self.instance_id
        if tx is not None:  # known already: all the attributes at once
            attributes = _instance_attributes(tx.instance)
        else:
            attributes = {"workflow.instance_id": str(instance_id)} if instance_id else None
        self.span = _tracer.start_span(f"workflow transition {kind}", attributes=attributes)
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def describe(self, tx: Any) -> None:
        """The locked instance's workflow, version and id."""
        self.tx = tx
        attributes = _instance_attributes(tx.instance)
        if self.instance_id is not None:
            del attributes["workflow.instance_id"]  # set at the start
        self.span.set_attributes(attributes)

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span, tx = self.span, self.tx
        try:
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
            elif tx is not None:
                _record(span, tx)
        finally:
            otel_context.detach(self.token)
            span.end()


def _record(span: Any, tx: Any) -> None:
    """The transition's events on its span (a step's completion is its own span's
    end: not repeated); the runs it made runnable remember it."""
    step = _current_step.get()
    for event in tx.events:
        status = getattr(event, "status", None)
        if status == "completed":
            continue
        name = getattr(event, "step_name", "")
        span.add_event(event.type, {"workflow.step": name} if name else None)
        if status is not None:  # a step's attempt failed (status failed or retrying)
            error = getattr(event, "error", "")
            span.set_status(Status(StatusCode.ERROR, error))
            span.set_attribute("workflow.status", status)
            if step is not None and step.step_name == name:
                step.span.set_status(Status(StatusCode.ERROR, error))
    if tx.runnable or tx.claimed is not None:
        context = trace.set_span_in_context(span)
        ids = list(tx.runnable)
        if tx.claimed is not None:
            ids.append(tx.claimed[0].pk)
        if len(_origins) + len(ids) > ORIGINS_LIMIT:  # never taken (a lost message)
            _origins.clear()
        for run_id in ids:
            _origins[run_id] = context


class StepTransition:
    """A step's own transition (its finish or fail) with ``TRACE_STEP_TRANSITIONS`` off:
    an event on the step's span instead of a span of its own."""

    __slots__ = ("kind", "step", "tx")

    def __init__(self, step: StepSpan, kind: Any, tx: Any) -> None:
        self.step, self.kind, self.tx = step, kind, tx

    def __enter__(self) -> StepTransition:
        return self

    def describe(self, tx: Any) -> None:
        self.tx = tx

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        span = self.step.span
        span.add_event(f"transition {_kind(self.kind)}")
        if exc is None and self.tx is not None:
            _record(span, self.tx)


# -- machine steps -----------------------------------------------------------------------


def step_span(claimed: Any) -> Any:
    """A span around one machine step (its ``execute()`` and the transition committing
    its outcome), the step's duration and queue delay measured when metrics are on."""
    if (ACTIVE is False and not _waiting) or not _on():
        return NULL
    return StepSpan(claimed[0])


class StepSpan:
    __slots__ = ("run", "span", "started", "step_name", "token", "var_token")

    def __init__(self, run: Any) -> None:
        self.run = run
        self.step_name = run.step_name
        self.span: Any = None
        self.token: Any = None
        self.var_token: Any = None
        self.started = 0.0

    def __enter__(self) -> StepSpan:
        run = self.run
        definition = run.instance.definition
        queued, started = run.queued_at, run.started_at
        # A run taken from the queue (not one its worker claimed in a transition).
        if _metrics is not None and isinstance(queued, datetime) and isinstance(started, datetime):
            delay = (started - queued).total_seconds()
            _metrics.queue_delay(definition.name, run.step_name, max(delay, 0.0))
        if _tracer is not None:
            parent = _origins.pop(run.pk, None)
            self.span = _tracer.start_span(
                f"workflow step {run.step_name}",
                context=parent,
                attributes={
                    "workflow.name": definition.name,
                    "workflow.version": definition.version,
                    "workflow.step": run.step_name,
                    "workflow.attempt": run.attempt,
                    "workflow.instance_id": str(run.instance_id),
                },
            )
            self.token = otel_context.attach(trace.set_span_in_context(self.span))
            self.var_token = _current_step.set(self)
        self.started = perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        elapsed = perf_counter() - self.started
        if _metrics is not None:
            _metrics.step_duration(self.run.instance.definition.name, self.step_name, elapsed)
        span = self.span
        if span is None:
            return
        try:
            if exc is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
        finally:
            _current_step.reset(self.var_token)
            otel_context.detach(self.token)
            span.end()

    def describe(self, tx: Any) -> None:
        return None


# -- across the queue ---------------------------------------------------------------------


def message_args(run_id: int) -> tuple[str, ...]:
    """The extra arguments of a queue message for ``run_id``: ``(traceparent,)`` when
    there is a span to continue (the transition that made the run runnable, else the
    current one), else none (a message as without tracing)."""
    if (ACTIVE is False and not _waiting) or not _on() or _tracer is None:
        return ()
    context = _origins.pop(run_id, None)
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=context)
    traceparent = carrier.get(TRACEPARENT)
    return (traceparent,) if traceparent else ()


def remote_parent(traceparent: str | None) -> Any:
    """In a worker: the span context a message carried becomes the current one (``with``),
    so the step span of the run continues the trace that queued it."""
    if not traceparent or (ACTIVE is False and not _waiting) or not _on() or _tracer is None:
        return NULL
    return _Attached(TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent}))


class _Attached:
    __slots__ = ("context", "token")

    def __init__(self, context: Any) -> None:
        self.context = context
        self.token: Any = None

    def __enter__(self) -> _Attached:
        self.token = otel_context.attach(self.context)
        return self

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self.token)
