"""Helpers of the metrics and tracing tests: a registry of their own, spans in memory."""

import contextlib

from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry

from django_workflows import tracing


@contextlib.contextmanager
def workflow_settings(**values):
    """``DJANGO_WORKFLOWS`` with ``values`` on top of the project's."""
    with override_settings(DJANGO_WORKFLOWS={**settings.DJANGO_WORKFLOWS, **values}):
        yield


@contextlib.contextmanager
def own_registry(**values):
    """Metrics in a fresh registry (returned), served to the token "s3cret"."""
    registry = CollectorRegistry()
    with workflow_settings(**{"METRICS_REGISTRY": registry, "METRICS_TOKEN": "s3cret", **values}):
        yield registry


@contextlib.contextmanager
def spans_in_memory():
    """The engine's spans go to an in-memory exporter (returned) through an SDK tracer
    provider of their own (not the global one)."""
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.refresh(tracer_provider=provider)
    exporter.provider = provider
    try:
        yield exporter
    finally:
        tracing.reset()
        provider.shutdown()


@contextlib.contextmanager
def global_tracer_provider_restored():
    """A page that calls ``trace.set_tracer_provider`` (allowed once per process) leaves
    the global provider as it found it, and the engine decides again."""
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    tracing.reset()
    try:
        yield
    finally:
        provider = trace._TRACER_PROVIDER
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        tracing.reset()
        if provider is not None and hasattr(provider, "shutdown"):
            provider.shutdown()
