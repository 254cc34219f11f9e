"""The graph picture draws boundary edges apart: error edges red and dashed, timeout
edges with a clock and their duration."""

import re

import pytest
from django.urls import reverse

from django_workflows.admin.diagram import duration_label, layout, render_svg
from django_workflows.models import DefinitionVersion, StepRun

from ..engine.test_boundary import definitions


def graphs():
    return {definition.name: definition.graph() for definition in definitions()}


def edge_tag(svg, source, target):
    match = re.search(
        rf'<path class="dwf-edge[^"]*"[^>]*data-source="{source}" '
        rf'data-target="{target}"[^>]*>',
        svg,
    )
    assert match, svg
    return match.group(0)


def test_an_error_edge_is_red_and_dashed_with_a_label():
    svg = render_svg(graphs()["charge"])
    error = edge_tag(svg, "charge", "notify_support")
    assert 'data-on="error"' in error
    assert "dwf-edge-error" in error
    assert 'stroke="#c62828"' in error
    assert "stroke-dasharray" in error
    assert "marker-end" in error and "arrow-error" in error
    assert "\u26a0 error" in svg
    # The ordinary edge stays plain.
    ordinary = edge_tag(svg, "charge", "ship")
    assert "data-on" not in ordinary
    assert "stroke-dasharray" not in ordinary


def test_a_timeout_edge_has_a_clock_and_its_duration():
    svg = render_svg(graphs()["approval"])
    timeout = edge_tag(svg, "approval", "auto_reject")
    assert 'data-on="timeout"' in timeout
    assert 'stroke="#b45f00"' in timeout
    assert "stroke-dasharray" in timeout
    assert "\u25f7 3d" in svg
    assert "(on timeout: \u25f7 3d)" in svg  # the edge's tooltip


def test_boundary_targets_are_laid_out_below_their_source():
    plan = layout(graphs()["charge"])
    assert plan.nodes["notify_support"].layer == plan.nodes["charge"].layer + 1
    assert [e.on for e in plan.edges] == ["", "error"]


def test_durations_are_short():
    assert duration_label(3 * 86400) == "3d"
    assert duration_label(86400 + 12 * 3600) == "1d 12h"
    assert duration_label(5400) == "1h 30m"
    assert duration_label(45) == "45s"
    assert duration_label("nonsense") == ""


@pytest.mark.django_db
def test_the_admin_pages_draw_and_list_boundary_edges(admin_client, admin_engine):
    for definition in definitions():
        admin_engine.registry.register_definition(definition)
    instance = admin_engine.start_workflow("approval", version="1")
    row = DefinitionVersion.objects.get(name="approval", version="1")

    page = admin_client.get(
        reverse("admin:django_workflows_definitionversion_change", args=[row.pk])
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-on="timeout"' in html
    assert '<span class="dwf-boundary">on timeout (after 259200 s)</span>' in html

    page = admin_client.get(
        reverse("admin:django_workflows_workflowinstance_change", args=[instance.pk])
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-on="timeout"' in html and "\u25f7 3d" in html
    timeout_at = StepRun.objects.get(instance=instance).timeout_at
    assert f"&#x25f7; times out {timeout_at:%Y-%m-%d %H:%M}</small>" in html
