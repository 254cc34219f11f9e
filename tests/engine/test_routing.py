"""Routing by tokens, alone: no database, no engine (``django_workflows.engine.routing``)."""

import pytest

from django_workflows import Edge, RoutingError, WorkflowDefinition, WorkflowRegistry
from django_workflows.engine import routing

from ..workflows import Record, conditional_review, gateways, parallel_notifications, rework_loop


def registered(definition: WorkflowDefinition) -> WorkflowDefinition:
    return WorkflowRegistry().register_definition(definition)


def finish(definition, tokens, step, context):
    """The steps started when ``step`` finishes, as the transition starts them."""
    started = []
    for target, live in routing.taken(definition, step, context):
        started += list(routing.deliver(definition, tokens, step, target, live))
    return started


def test_unconditioned_edges_run_in_parallel_and_the_join_waits_for_all():
    definition = registered(parallel_notifications())
    tokens: dict = {}
    assert finish(definition, tokens, "start", {}) == [
        ("notify_email", False),
        ("notify_slack", False),
        ("notify_sms", False),
    ]
    assert finish(definition, tokens, "notify_email", {}) == []
    assert finish(definition, tokens, "notify_sms", {}) == []
    assert tokens == {"complete": {"notify_email": True, "notify_sms": True}}
    assert finish(definition, tokens, "notify_slack", {}) == [("complete", False)]
    assert tokens == {}  # the join took its tokens


@pytest.mark.parametrize(("score", "taken"), [(90, "approve"), (10, "reject")])
def test_a_join_after_a_conditional_split_does_not_wait_for_the_branch_not_taken(score, taken):
    definition = registered(conditional_review())
    tokens: dict = {}
    assert finish(definition, tokens, "review", {"score": score}) == [(taken, False)]
    # The branch not taken sent a dead token to the join already.
    assert finish(definition, tokens, taken, {}) == [("notify", False)]


def test_an_exclusive_gateway_takes_the_first_match_else_its_default():
    definition = registered(gateways())
    assert routing.taken(definition, "route", {"weight": 0.5}) == [
        ("express", True),
        ("priority", False),
        ("standard", False),
    ]
    assert [t for t, live in routing.taken(definition, "route", {"weight": 9}) if live] == [
        "standard"
    ]
    assert all(live for _, live in routing.taken(definition, "split", {}))


def test_a_loop_restarts_its_target_by_its_back_edge():
    definition = registered(rework_loop())
    (back,) = definition.back_edges
    source, target = back
    tokens = {target: {"stale": True}}
    assert list(routing.deliver(definition, tokens, source, target, True)) == [(target, True)]
    assert target not in tokens
    assert list(routing.deliver(definition, tokens, source, target, False)) == []


def test_dead_paths_pass_dead_tokens_on_and_a_join_of_dead_tokens_is_skipped():
    definition = registered(
        WorkflowDefinition(
            name="dead",
            version="1",
            initial_step="a",
            steps={name: Record() for name in "abcde"},
            edges=[
                Edge("a", "b", condition="context.get('go') == True"),
                Edge("a", "c", condition="context.get('go') != True"),
                Edge("b", "d"),
                Edge("c", "d"),
                Edge("d", "e"),
            ],
        )
    )
    tokens: dict = {}
    assert finish(definition, tokens, "a", {"go": True}) == [("b", False)]
    # c was never taken: its dead token is at the join d; b's live one starts d.
    assert tokens == {"d": {"c": False}}
    assert finish(definition, tokens, "b", {}) == [("d", False)]

    # Every token dead: b and c are skipped, so is the join d, and e after it.
    tokens = {}
    assert list(routing.deliver(definition, tokens, "a", "b", False)) == []
    assert list(routing.deliver(definition, tokens, "a", "c", False)) == []
    assert tokens == {}


def test_no_matching_edge_is_a_routing_error():
    definition = registered(
        WorkflowDefinition(
            name="stuck",
            version="1",
            initial_step="a",
            steps={name: Record() for name in "abc"},
            edges=[
                Edge("a", "b", condition="context.get('x') == 1"),
                Edge("a", "c", condition="context.get('x') == 2"),
            ],
        )
    )
    with pytest.raises(RoutingError, match="no outgoing edge of step 'a' matched"):
        routing.taken(definition, "a", {})
