"""Routing by tokens: which edges a finished step takes, and what each token starts.

Token algebra only, no database: a taken edge sends a live token to its target, an
edge whose condition is false a dead one. A step with one forward incoming edge
starts on a live token. A join (several forward incoming edges) waits for a token on
each and starts if one of them is live; if all are dead it is skipped and passes dead
tokens on (dead-path elimination). A live token on a back edge (a loop) restarts its
target on its own. See ``docs/explanation/routing.md``.

``tokens`` is the instance's ``{join: {source: live}}``; ``deliver`` updates it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..definition import WorkflowDefinition
from ..exceptions import RoutingError
from ..steps import ExclusiveGateway, ParallelGateway


def taken(
    definition: WorkflowDefinition, step_name: str, context: Any, boundary: str | None = None
) -> list[tuple[str, bool]]:
    """For each outgoing edge of a finished step, in order: (target, live).

    A boundary edge (``Edge.on``) is a path taken only when its step fails or times out:
    when the step succeeds it gets a dead token; when ``boundary`` ("error", "timeout")
    is what happened, only that edge is live and every other edge gets a dead token.
    Raises ``RoutingError`` when no edge can be taken (or a condition's error)."""
    if boundary is not None:
        return [(edge.target, edge.on == boundary) for edge in definition.edges_from(step_name)]
    dead = [(edge.target, False) for edge in definition.edges_from(step_name) if edge.on]
    return _taken(definition, step_name, context) + dead


def _taken(definition: WorkflowDefinition, step_name: str, context: Any) -> list[tuple[str, bool]]:
    step = definition.steps[step_name]
    edges = definition.outgoing(step_name)
    if not edges:
        return []
    live: list[bool]
    if isinstance(step, ParallelGateway):
        live = [True] * len(edges)
    elif isinstance(step, ExclusiveGateway):
        live = [False] * len(edges)
        for index, (_edge, condition) in enumerate(edges):
            if condition is None or condition(context):
                live[index] = True
                break
        else:
            if step.default is None:
                raise RoutingError(
                    f"no edge of exclusive gateway {step_name!r} matched and it has no default"
                )
            live = [edge.target == step.default for edge, _ in edges]
    else:
        live = [condition is None or condition(context) for _, condition in edges]
        if not any(live):
            raise RoutingError(
                f"no outgoing edge of step {step_name!r} matched the context "
                f"(edges: {', '.join(str(e) for e, _ in edges)})"
            )
    return [(edge.target, alive) for (edge, _), alive in zip(edges, live, strict=True)]


def deliver(
    definition: WorkflowDefinition,
    tokens: dict[str, dict[str, bool]],
    source: str,
    target: str,
    live: bool,
) -> Iterator[tuple[str, bool]]:
    """Deliver a token from ``source`` to ``target``; yield each step it starts, in order,
    as (step, by a loop's back edge).

    A generator: the caller starts each step as it is yielded (a gateway routes on at
    once, delivering tokens of its own) before the delivery goes on, so joins see the
    tokens in the order the graph sends them."""
    if (source, target) in definition.back_edges:
        if live:  # a loop restarts its target on its own; a dead loop edge goes nowhere
            tokens.pop(target, None)
            yield target, True
        return
    sources = definition.forward_sources[target]
    if len(sources) > 1:  # a join: wait for a token from every forward edge
        waiting = tokens.setdefault(target, {})
        waiting[source] = bool(waiting.get(source)) or live
        if len(waiting) < len(sources):
            return
        live = any(tokens.pop(target).values())
    if live:
        yield target, False
    else:  # dead-path elimination: the skipped step passes dead tokens on
        for edge in definition.edges_from(target):  # boundary edges too
            yield from deliver(definition, tokens, edge.source, edge.target, False)
