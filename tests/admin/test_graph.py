"""The graph picture: layout, states, escaping (django_workflows.admin.diagram, no database)."""

import re
from itertools import pairwise

from django_workflows.admin.diagram import (
    condition_label,
    layout,
    render_svg,
    step_states,
    taken_edges,
)

from ..workflows import gateways, rework_loop
from . import workflows


def approval_graph():
    return workflows.approval().graph()


def test_layers_follow_the_longest_path_from_the_start():
    plan = layout(gateways().graph())

    layer = {name: node.layer for name, node in plan.nodes.items() if not node.dummy}
    assert layer["start"] == 0
    assert layer["route"] == 1
    assert layer["express"] == layer["priority"] == layer["standard"] == 2
    assert layer["split"] == 3
    assert layer["pack"] == layer["invoice"] == 4
    assert layer["ship"] == 5
    ys = [plan.nodes[name].y for name in ("start", "route", "express", "split", "pack", "ship")]
    assert ys == sorted(ys)  # top to bottom


def test_steps_of_a_layer_do_not_overlap():
    plan = layout(gateways().graph())

    for layer in plan.layers:
        nodes = [plan.nodes[key] for key in layer]
        for left, right in pairwise(nodes):
            assert left.x + left.w / 2 < right.x - right.w / 2


def test_a_loop_edge_is_drawn_back_and_does_not_push_the_layers():
    graph = rework_loop().graph()
    plan = layout(graph)

    back = [(e.source, e.target) for e in plan.edges if e.back]
    assert back == [("review", "draft")]
    assert [plan.nodes[n].layer for n in ("draft", "review", "publish")] == [0, 1, 2]
    svg = render_svg(graph)
    assert re.search(r'data-source="review" data-target="draft"[^>]*stroke-dasharray', svg)


def test_an_edge_skipping_layers_bends_around_the_steps_between():
    graph = {
        "name": "skip",
        "initial_step": "a",
        "steps": {n: {"type": "machine"} for n in "abcd"},
        "edges": [
            {"source": "a", "target": "b"},
            {"source": "b", "target": "c"},
            {"source": "c", "target": "d"},
            {"source": "a", "target": "d", "condition": "context.get('fast')"},
        ],
    }
    plan = layout(graph)

    skip = next(e for e in plan.edges if (e.source, e.target) == ("a", "d"))
    assert len(skip.path) == 4  # a, a bend on layer 1, a bend on layer 2, d
    bends = [plan.nodes[key] for key in skip.path[1:-1]]
    assert all(bend.dummy for bend in bends)
    assert bends[0].layer == plan.nodes["b"].layer
    assert abs(bends[0].x - plan.nodes["b"].x) > plan.node_w / 2  # beside b, not through it


def test_every_text_from_the_graph_is_escaped():
    evil = "<script>alert(1)</script>"
    graph = {
        "name": evil,
        "version": '"1"',
        "initial_step": evil,
        "steps": {
            evil: {"type": "human", "description": "<b>bold</b>"},
            "x&y": {"type": evil},
        },
        "edges": [{"source": evil, "target": "x&y", "condition": "context.get('a') < 3 and '<'"}],
    }

    svg = render_svg(graph, {evil: "failed"}, {(evil, "x&y")}, id_prefix='"><script>')

    assert "<script>" not in svg
    assert "<b>" not in svg
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "x&amp;y" in svg
    assert "a &lt; 3 and &#x27;&lt;&#x27;" in svg
    assert 'id="---script--title"' in svg  # the id prefix is reduced to safe characters


def test_states_color_the_steps_and_the_legend_explains_them():
    svg = render_svg(
        approval_graph(), {"submit": "completed", "approve": "current"}, {("submit", "approve")}
    )

    assert 'data-step="submit" data-state="completed"' in svg
    assert 'data-step="approve" data-state="current"' in svg
    assert 'data-step="pay" data-state="pending"' in svg
    assert 'data-source="submit" data-target="approve" data-taken="true"' in svg
    legend = svg.split('class="dwf-legend"')[1]
    for label in ("Completed", "Current", "Failed", "Canceled", "Not reached"):
        assert label in legend
    assert "dwf-legend" not in render_svg(approval_graph())


def test_each_picture_has_its_own_marker_ids():
    first = render_svg(approval_graph(), id_prefix="one")
    second = render_svg(approval_graph(), id_prefix="two")

    assert 'id="one-arrow"' in first and "url(#one-arrow)" in first
    assert 'id="two-arrow"' in second and "one-arrow" not in second


def test_steps_are_drawn_by_type():
    svg = render_svg(gateways().graph()) + render_svg(workflows.approval().graph())

    assert "dwf-step-gateway" in svg and "<polygon" in svg
    assert "exclusive gateway" in svg and "parallel gateway" in svg
    assert "human task" in svg and "machine step" in svg


def test_condition_labels_are_short():
    assert condition_label("context.get('approved') == True") == "approved == True"
    assert condition_label("context.get('weight', 0) < 5") == "weight < 5"
    assert condition_label("<callable is_big>") == "\u0192 is_big"
    assert condition_label(None) == ""
    long = condition_label(" or ".join(f"context.get('k{i}')" for i in range(20)))
    assert len(long) == 32 and long.endswith("\u2026")


def test_default_edge_of_an_exclusive_gateway_is_labelled():
    svg = render_svg(gateways().graph())

    assert ">default</text>" in svg


def test_step_states_take_the_latest_run_and_mark_current_and_failed():
    runs = [("a", "completed"), ("b", "failed"), ("b", "completed"), ("c", "waiting")]

    assert step_states(runs) == {"a": "completed", "b": "completed", "c": "current"}
    assert step_states(runs, current_steps=["d"], failed_step="a") == {
        "a": "failed",
        "b": "completed",
        "c": "current",
        "d": "current",
    }


def test_taken_edges_follow_the_order_of_the_runs():
    edges = [("draft", "review"), ("review", "draft"), ("review", "publish")]
    approved = [(1, "draft", "completed"), (2, "review", "completed"), (3, "publish", "queued")]
    reworked = [(1, "draft", "completed"), (2, "review", "completed"), (3, "draft", "running")]

    assert taken_edges(approved, edges) == {("draft", "review"), ("review", "publish")}
    assert taken_edges(reworked, edges) == {("draft", "review"), ("review", "draft")}
