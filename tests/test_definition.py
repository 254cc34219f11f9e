"""Graph validation at registration, conditions, loop facts and the graph checksum."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from django_workflows import (
    ConditionError,
    DefinitionError,
    Edge,
    ExclusiveGateway,
    ParallelGateway,
    TimerStep,
    WorkflowDefinition,
    WorkflowRegistry,
    WorkflowStatus,
)

from . import workflows
from .workflows import ManagerApproval, Record, Review


def linear(**overrides) -> WorkflowDefinition:
    """A valid two-step graph; ``overrides`` replace its fields."""
    fields = {
        "name": "linear",
        "version": "1.0.0",
        "initial_step": "a",
        "steps": {"a": Record(), "b": Record()},
        "edges": [Edge("a", "b")],
    }
    fields.update(overrides)
    return WorkflowDefinition(**fields)


def refused(definition, error=DefinitionError, match=None):
    """Register ``definition`` on a fresh registry, expect ``error``; return its message."""
    reg = WorkflowRegistry()
    with pytest.raises(error, match=match) as excinfo:
        reg.register_definition(definition)
    assert not reg.has_definition(definition.name)  # nothing half-registered
    return str(excinfo.value)


def test_a_valid_graph_registers():
    definition = linear()
    reg = WorkflowRegistry()

    assert reg.register_definition(definition) is definition
    assert reg.get_definition("linear") is definition
    assert [edge for edge, _ in definition.outgoing("a")] == [Edge("a", "b")]
    assert definition.outgoing("b") == []


# -- structure --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        (Edge("a", "ghost"), "edge a -> ghost names unknown step 'ghost'"),
        (Edge("ghost", "b"), "edge ghost -> b names unknown step 'ghost'"),
    ],
    ids=["target", "source"],
)
def test_edge_naming_an_unknown_step(edge, message):
    message_text = refused(linear(edges=[Edge("a", "b"), edge]), match=re.escape(message))
    assert "workflow 'linear' 1.0.0" in message_text


def test_initial_step_missing():
    refused(linear(initial_step="start"), match=re.escape("initial step 'start' does not exist"))


def test_unreachable_step():
    definition = linear(steps={"a": Record(), "b": Record(), "orphan": Record()})
    refused(definition, match=re.escape("step 'orphan' is unreachable from 'a'"))


def test_unreachable_island_even_with_its_own_edges():
    definition = linear(
        steps={"a": Record(), "b": Record(), "c": Record(), "d": Record()},
        edges=[Edge("a", "b"), Edge("c", "d")],
    )
    refused(definition, match=re.escape("step 'c' is unreachable from 'a'"))


@pytest.mark.parametrize(
    ("steps", "edges", "stuck"),
    [
        # A two-step cycle with no exit, beside a path that ends.
        (
            ["start", "a", "b", "end"],
            [Edge("start", "a"), Edge("start", "end"), Edge("a", "b"), Edge("b", "a")],
            "a",
        ),
        # The whole graph is a cycle: there is no end step at all.
        (["a", "b"], [Edge("a", "b"), Edge("b", "a")], "a"),
        # A self-loop with no way out.
        (
            ["start", "spin", "end"],
            [Edge("start", "spin"), Edge("start", "end"), Edge("spin", "spin")],
            "spin",
        ),
    ],
    ids=["cycle-beside-an-end", "cycle-only", "self-loop"],
)
def test_step_with_no_path_to_an_end_step(steps, edges, stuck):
    definition = linear(
        initial_step=steps[0], steps={name: Record() for name in steps}, edges=edges
    )
    refused(definition, match=re.escape(f"step {stuck!r} has no path to an end step"))


def test_a_loop_with_an_exit_is_valid():
    definition = workflows.rework_loop()
    WorkflowRegistry().register_definition(definition)
    assert definition.targets_of("review") == ["draft", "publish"]


def test_duplicate_edge():
    definition = linear(edges=[Edge("a", "b"), Edge("a", "b", condition="True")])
    refused(definition, match=re.escape("edge a -> b is declared twice"))


@pytest.mark.parametrize("condition", ["context.get('x') == 1", lambda ctx: True])
def test_condition_on_an_edge_out_of_a_parallel_gateway(condition):
    definition = linear(
        initial_step="split",
        steps={"split": ParallelGateway(), "x": Record(), "y": Record()},
        edges=[Edge("split", "x", condition=condition), Edge("split", "y")],
    )
    refused(definition, match=re.escape("edge split -> x leaves a ParallelGateway"))


def gateway_graph(default):
    return linear(
        initial_step="start",
        steps={
            "start": Record(),
            "route": ExclusiveGateway(default=default),
            "x": Record(),
            "y": Record(),
            "z": Record(),
        },
        edges=[
            Edge("start", "route"),
            Edge("route", "x", condition="context.get('n', 0) > 1"),
            Edge("route", "y", condition="context.get('n', 0) < -1"),
            Edge("x", "z"),
        ],
    )


@pytest.mark.parametrize("default", ["z", "nowhere", "route"])
def test_exclusive_gateway_default_must_be_a_target_of_its_edges(default):
    # "z" is a step of the graph, reachable, but not a target of the gateway's edges.
    refused(
        gateway_graph(default),
        match=re.escape(
            f"default {default!r} of gateway 'route' is not the target of one of its edges"
        ),
    )


@pytest.mark.parametrize("default", ["x", "y", None])
def test_exclusive_gateway_default_among_its_targets_is_valid(default):
    definition = gateway_graph(default)
    WorkflowRegistry().register_definition(definition)
    assert definition.steps["route"].default == default


def test_timer_needs_a_duration_or_get_due_at():
    definition = linear(
        steps={"a": Record(), "wait": TimerStep(), "b": Record()},
        edges=[Edge("a", "wait"), Edge("wait", "b")],
    )
    refused(definition, match=re.escape("timer step 'wait' needs a duration or a get_due_at()"))


class Deadline(TimerStep):
    def get_due_at(self, context):
        return timezone.now() + timedelta(days=1)


@pytest.mark.parametrize(
    "timer", [TimerStep(timedelta(minutes=5)), Deadline()], ids=["duration", "get_due_at"]
)
def test_timer_with_a_duration_or_get_due_at_is_valid(timer):
    definition = linear(
        steps={"a": Record(), "wait": timer, "b": Record()},
        edges=[Edge("a", "wait"), Edge("wait", "b")],
    )
    assert WorkflowRegistry().register_definition(definition) is definition


@pytest.mark.parametrize(
    ("bad", "kind"),
    [(object(), "object"), (Record, "type"), ("Record", "str"), (None, "NoneType")],
    ids=["object", "class-not-instance", "string", "none"],
)
def test_non_step_object_in_steps(bad, kind):
    definition = linear(steps={"a": Record(), "b": bad})
    refused(definition, match=re.escape(f"step 'b' is a {kind}, not a step instance"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "a workflow definition needs a non-empty name"),
        ({"name": None}, "a workflow definition needs a non-empty name"),
        ({"version": ""}, "workflow 'linear': version must be a non-empty string"),
        ({"version": 1}, "workflow 'linear': version must be a non-empty string"),
        ({"steps": {}}, "workflow 'linear' 1.0.0: has no steps"),
    ],
)
def test_name_version_and_steps_must_be_given(overrides, message):
    with pytest.raises(DefinitionError, match=re.escape(message)):
        WorkflowRegistry().register_definition(linear(**overrides))


# -- conditions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('id')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "context.__class__",
        "context._data",
        "open('/etc/passwd').read()",
        "eval('1')",
        "exec('x = 1')",
        "globals()",
        "(lambda: 1)()",
        "[c for c in context.get('x')]",
        "context.get('a' >",  # does not parse
        "",
    ],
)
def test_malicious_or_invalid_condition_is_refused_at_registration(source):
    definition = linear(edges=[Edge("a", "b", condition=source)])
    message = refused(definition, error=ConditionError)
    assert "condition of edge a -> b" in message
    assert "workflow 'linear' 1.0.0" in message


def test_condition_of_the_wrong_type_is_refused():
    definition = linear(edges=[Edge("a", "b", condition=42)])
    message = refused(definition, error=ConditionError)
    assert "edge a -> b" in message
    assert "string or a callable" in message


def test_condition_error_is_a_definition_error():
    assert issubclass(ConditionError, DefinitionError)


def test_callable_conditions_are_accepted_and_compiled_once():
    def is_big(context):
        return context.get("n", 0) > 10

    definition = linear(
        steps={"a": Record(), "big": Record(), "small": Record()},
        edges=[
            Edge("a", "big", condition=is_big),
            Edge("a", "small", condition=lambda context: not is_big(context)),
        ],
    )
    WorkflowRegistry().register_definition(definition)

    (_, big), (_, small) = definition.outgoing("a")
    assert big({"n": 11}) is True
    assert big({"n": 1}) is False
    assert small({"n": 1}) is True
    assert definition.outgoing("a") is definition.outgoing("a")  # compiled once, cached
    # The stored snapshot is JSON even though the conditions are code.
    graph = json.loads(json.dumps(definition.graph()))
    assert graph["edges"][0]["condition"].startswith("<callable ")
    assert "is_big" in graph["edges"][0]["condition"]


@pytest.mark.django_db
@pytest.mark.parametrize(("n", "taken"), [(50, "big"), (5, "small")])
def test_callable_conditions_route_in_the_engine(engine, wf_registry, n, taken):
    wf_registry.register_definition(
        linear(
            name="callables",
            steps={"a": Record(), "big": Record(), "small": Record()},
            edges=[
                Edge("a", "big", condition=lambda context: context.get("n") > 10),
                Edge("a", "small", condition=lambda context: context.get("n") <= 10),
            ],
        )
    )
    instance = engine.start_workflow("callables", initial_data={"n": n})

    assert instance.status == WorkflowStatus.COMPLETED
    assert [step for _, step in workflows.calls] == ["a", taken]


# -- loops: back edges and joins ------------------------------------------------------------


def test_back_edges_and_forward_sources_of_the_rework_loop():
    definition = workflows.rework_loop()
    WorkflowRegistry().register_definition(definition)

    assert definition.back_edges == frozenset({("review", "draft")})
    # The loop's entry is not a join: it waits for no token from its own loop.
    assert definition.forward_sources == {
        "draft": (),
        "review": ("draft",),
        "publish": ("review",),
    }


def test_back_edges_of_nested_loops_and_a_loop_entered_from_outside():
    definition = linear(
        initial_step="start",
        steps={name: Record() for name in ("start", "fix", "check", "approve", "done")},
        edges=[
            Edge("start", "fix"),
            Edge("fix", "check"),
            Edge("check", "fix", condition="context.get('ok') != True"),
            Edge("check", "approve", condition="context.get('ok') == True"),
            Edge("approve", "start", condition="context.get('again') == True"),
            Edge("approve", "done", condition="context.get('again') != True"),
        ],
    )
    WorkflowRegistry().register_definition(definition)

    assert definition.back_edges == frozenset({("check", "fix"), ("approve", "start")})
    assert definition.forward_sources["fix"] == ("start",)
    assert definition.forward_sources["start"] == ()
    assert definition.forward_sources["done"] == ("approve",)


def test_a_parallel_join_has_every_branch_as_forward_source_and_no_back_edge():
    definition = workflows.parallel_notifications()
    WorkflowRegistry().register_definition(definition)

    assert definition.back_edges == frozenset()
    assert definition.forward_sources["complete"] == ("notify_email", "notify_slack", "notify_sms")


# -- checksum -----------------------------------------------------------------------------


def test_checksum_is_stable_for_the_same_graph():
    first, second = workflows.gateways(), workflows.gateways()

    assert first is not second
    assert first.checksum == second.checksum
    assert re.fullmatch(r"[0-9a-f]{64}", first.checksum)
    # Registration does not change it.
    WorkflowRegistry().register_definition(second)
    assert second.checksum == first.checksum


def add_edge(definition):
    definition.edges.append(Edge("express", "ship"))


def remove_edge(definition):
    definition.edges.pop()


def change_condition(definition):
    definition.edges[1] = Edge("route", "express", condition="context.get('weight', 0) < 2")


def drop_condition(definition):
    definition.edges[1] = Edge("route", "express")


def change_step_type(definition):
    definition.steps["pack"] = ManagerApproval()


def change_gateway_default(definition):
    definition.steps["route"] = ExclusiveGateway(default="express")


def reorder_gateway_edges(definition):
    # An exclusive gateway takes the first matching edge: the order is routing.
    definition.edges[1], definition.edges[2] = definition.edges[2], definition.edges[1]


@pytest.mark.parametrize(
    "change",
    [
        add_edge,
        remove_edge,
        change_condition,
        drop_condition,
        change_step_type,
        change_gateway_default,
        reorder_gateway_edges,
    ],
)
def test_checksum_changes_when_the_graph_changes(change):
    original = workflows.gateways()
    changed = workflows.gateways()
    change(changed)
    WorkflowRegistry().register_definition(changed)  # still a valid graph

    assert changed.checksum != original.checksum


def test_checksum_covers_the_kind_of_gateway():
    # Same steps, same unconditioned edges: the exclusive gateway takes one branch, the
    # parallel one takes both, so the graphs differ.
    def split(gateway):
        return linear(
            initial_step="split",
            steps={"split": gateway, "x": Record(), "y": Record()},
            edges=[Edge("split", "x"), Edge("split", "y")],
        )

    exclusive, parallel = split(ExclusiveGateway()), split(ParallelGateway())
    assert exclusive.graph()["edges"] == parallel.graph()["edges"]
    assert exclusive.checksum != parallel.checksum


def test_checksum_ignores_descriptions_and_step_code():
    original = workflows.conditional_review()
    described = workflows.conditional_review()
    described.description = "A brand new description"
    described.steps["review"] = Review(description="Review it, now with a description")
    described.steps["approve"] = Review(description="Another class of the same type")

    assert described.checksum == original.checksum
    assert described.graph() != original.graph()  # the snapshot does show them
