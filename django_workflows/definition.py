"""Workflow definitions: a validated graph of named steps and edges."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from .conditions import Condition, compile_condition
from .exceptions import ConditionError, DefinitionError
from .signal_steps import WaitForSignal
from .steps import (
    ACTION_KINDS,
    BaseHumanStep,
    BaseStep,
    ExclusiveGateway,
    ParallelGateway,
    TimerStep,
)


def _step_shape(step: BaseStep) -> Any:
    """What of a step the checksum covers: its type, and how a gateway routes."""
    if isinstance(step, ParallelGateway):
        return "gateway:parallel"
    if isinstance(step, ExclusiveGateway):
        return {"type": "gateway:exclusive", "default": step.default}
    if isinstance(step, WaitForSignal):  # what it waits for, and where its data goes
        return {"type": "signal", "signal": step.signal_name, "key": step.key}
    return str(step.step_type)


#: The lengths of the columns names and versions are stored in.
NAME_LENGTH = 200
VERSION_LENGTH = 50


def _check_name(what: str, value: str, length: int) -> None:
    """A name the database can store: short enough, UTF-8, no NUL."""
    if len(value) > length:
        raise DefinitionError(f"{what} {value[:40]!r}... is longer than {length} characters")
    if "\x00" in value:
        raise DefinitionError(f"{what} {value!r} contains a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise DefinitionError(f"{what} {value!r} is not valid text (a lone surrogate)") from None


def find_back_edges(
    roots: Sequence[str], outgoing: Mapping[str, Sequence[str]]
) -> set[tuple[str, str]]:
    """The edges that close a loop: depth-first search from each root in turn, without
    recursion; an edge back to a step still on the search path closes a loop."""
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in roots:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            targets = outgoing[node]
            if index < len(targets):
                stack.append((node, index + 1))
                target = targets[index]
                if state.get(target) == 1:
                    back.add((node, target))
                elif target not in state:
                    state[target] = 1
                    stack.append((target, 0))
            else:
                state[node] = 2
    return back


@dataclass(frozen=True)
class Edge:
    """A transition from ``source`` to ``target``, taken when ``condition`` holds (or always)."""

    source: str
    target: str
    condition: str | Callable[[Any], Any] | None = None
    #: A boundary edge: "error" (taken when the source fails for good) or "timeout"
    #: (taken ``after`` the source started waiting); None: an ordinary edge.
    on: str | None = field(default=None, kw_only=True)
    after: timedelta | None = field(default=None, kw_only=True)

    def __str__(self) -> str:
        kind = f" (on {self.on})" if self.on else ""
        return f"{self.source} -> {self.target}{kind}"

    def describe(self) -> dict[str, Any]:
        condition = self.condition
        if callable(condition):
            condition = f"<callable {getattr(condition, '__qualname__', repr(condition))}>"
        described = {"source": self.source, "target": self.target, "condition": condition}
        # Only on boundary edges: an ordinary edge keeps the checksum it always had.
        if self.on is not None:
            described["on"] = self.on
        if self.after is not None:
            described["after_seconds"] = self.after.total_seconds()
        return described


@dataclass
class WorkflowDefinition:
    """A named, versioned workflow: ``steps`` by name, ``edges`` between them.

    ``validate()`` (called by ``WorkflowRegistry.register_definition``) checks the
    graph and compiles the conditions once; a definition is not changed after that.
    """

    name: str
    version: str
    initial_step: str
    steps: Mapping[str, BaseStep]
    edges: Sequence[Edge] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        self.steps = dict(self.steps)
        self.edges = list(self.edges)
        self._conditions: dict[int, Condition] | None = None

    # -- validation ---------------------------------------------------------

    def validate(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise DefinitionError("a workflow definition needs a non-empty name")
        if not self.version or not isinstance(self.version, str):
            raise DefinitionError(f"workflow {self.name!r}: version must be a non-empty string")
        _check_name("workflow name", self.name, NAME_LENGTH)
        _check_name(f"workflow {self.name!r}: version", self.version, VERSION_LENGTH)
        where = f"workflow {self.name!r} {self.version}"
        if not self.steps:
            raise DefinitionError(f"{where}: has no steps")
        for step_name, step in self.steps.items():
            if not isinstance(step_name, str) or not step_name:
                raise DefinitionError(f"{where}: step names must be non-empty strings")
            _check_name(f"{where}: step name", step_name, NAME_LENGTH)
            if not isinstance(step, BaseStep):
                raise DefinitionError(
                    f"{where}: step {step_name!r} is a {type(step).__name__}, not a step instance"
                )
            if (
                isinstance(step, TimerStep)
                and step.duration is None
                and (type(step).get_due_at is TimerStep.get_due_at)
            ):
                raise DefinitionError(
                    f"{where}: timer step {step_name!r} needs a duration or a get_due_at()"
                )
            if isinstance(step, BaseHumanStep):
                _check_human_step(where, step_name, step)
        if self.initial_step not in self.steps:
            raise DefinitionError(f"{where}: initial step {self.initial_step!r} does not exist")
        seen: set[tuple[str, str]] = set()
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in self.steps:
                    raise DefinitionError(f"{where}: edge {edge} names unknown step {end!r}")
            if (edge.source, edge.target) in seen:  # whatever its kind: one token per pair
                raise DefinitionError(f"{where}: edge {edge} is declared twice")
            seen.add((edge.source, edge.target))
            _check_boundary(where, edge, self.steps[edge.source])
            if edge.condition is not None and isinstance(self.steps[edge.source], ParallelGateway):
                raise DefinitionError(
                    f"{where}: edge {edge} leaves a ParallelGateway, which takes every edge; "
                    "it cannot have a condition"
                )
        conditions = {}
        for index, edge in enumerate(self.edges):
            if edge.condition is not None:
                try:
                    conditions[index] = compile_condition(edge.condition)
                except ConditionError as exc:
                    raise ConditionError(f"{where}: condition of edge {edge}: {exc}") from None
        for step_name, step in self.steps.items():
            if (
                isinstance(step, ExclusiveGateway)
                and step.default is not None
                and step.default not in self.targets_of(step_name)
            ):
                raise DefinitionError(
                    f"{where}: default {step.default!r} of gateway {step_name!r} "
                    "is not the target of one of its edges"
                )
        kinds = [(edge.source, edge.on) for edge in self.edges if edge.on]
        for source, on in set(kinds):
            if kinds.count((source, on)) > 1:
                raise DefinitionError(f"{where}: step {source!r} has more than one {on} edge")
        reachable = self._reach(self.initial_step, self._outgoing)
        for step_name in self.steps:
            if step_name not in reachable:
                raise DefinitionError(
                    f"{where}: step {step_name!r} is unreachable from {self.initial_step!r}"
                )
        incoming: dict[str, list[str]] = {name: [] for name in self.steps}
        for edge in self.edges:  # a boundary edge is a path to an end too
            incoming[edge.target].append(edge.source)
        can_end: set[str] = set()
        for end in (name for name in self.steps if not self.targets_of(name)):
            can_end |= self._reach(end, incoming)
        for step_name in self.steps:
            if step_name not in can_end:
                raise DefinitionError(f"{where}: step {step_name!r} has no path to an end step")
        self._conditions = conditions

    @staticmethod
    def _reach(start: str, neighbours: Mapping[str, Sequence[str]]) -> set[str]:
        seen, stack = {start}, [start]
        while stack:
            for nxt in neighbours[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    # -- graph facts the engine routes by --------------------------------------

    @cached_property
    def _outgoing(self) -> dict[str, list[str]]:
        """Every edge, boundary edges included: tokens go down all of them (a boundary
        edge gets a dead token when its step succeeds), so joins and loops count them."""
        out: dict[str, list[str]] = {name: [] for name in self.steps}
        for edge in self.edges:
            out[edge.source].append(edge.target)
        return out

    def edges_from(self, step_name: str) -> list[Edge]:
        """Every edge leaving the step, boundary edges included, in definition order."""
        return self._edges_from[step_name]

    @cached_property
    def _edges_from(self) -> dict[str, list[Edge]]:
        out: dict[str, list[Edge]] = {name: [] for name in self.steps}
        for edge in self.edges:
            out[edge.source].append(edge)
        return out

    def boundary(self, step_name: str, on: str) -> Edge | None:
        """The step's ``on="error"`` or ``on="timeout"`` edge, if it has one."""
        for edge in self.edges:
            if edge.source == step_name and edge.on == on:
                return edge
        return None

    def targets_of(self, step_name: str) -> list[str]:
        """The targets of the step's ordinary edges (what success routes by)."""
        return [edge.target for edge in self._edges_from[step_name] if edge.on is None]

    def outgoing(self, step_name: str) -> list[tuple[Edge, Condition | None]]:
        """The step's edges in definition order, each with its compiled condition."""
        return self._outgoing_edges[step_name]

    @cached_property
    def _outgoing_edges(self) -> dict[str, list[tuple[Edge, Condition | None]]]:
        if self._conditions is None:
            self.validate()
        conditions = self._conditions or {}
        out: dict[str, list[tuple[Edge, Condition | None]]] = {name: [] for name in self.steps}
        for index, edge in enumerate(self.edges):
            if edge.on is None:
                out[edge.source].append((edge, conditions.get(index)))
        return out

    @cached_property
    def back_edges(self) -> frozenset[tuple[str, str]]:
        """Edges that close a loop (found by depth-first search from the initial step).

        A token on a back edge starts its target on its own: joins wait only for
        forward edges, else a loop's entry step would wait for itself.
        """
        return frozenset(find_back_edges([self.initial_step], self._outgoing))

    @cached_property
    def forward_sources(self) -> dict[str, tuple[str, ...]]:
        """For each step, the sources of its incoming forward edges; more than one makes a join."""
        sources: dict[str, list[str]] = {name: [] for name in self.steps}
        for edge in self.edges:
            if (edge.source, edge.target) not in self.back_edges:
                sources[edge.target].append(edge.source)
        return {name: tuple(found) for name, found in sources.items()}

    # -- snapshot --------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        """A JSON description of the graph, stored with the definition version."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "initial_step": self.initial_step,
            "steps": {name: step.describe() for name, step in self.steps.items()},
            "edges": [edge.describe() for edge in self.edges],
        }

    @cached_property
    def checksum(self) -> str:
        """sha256 of the graph's shape: step names and types, edges, conditions (not code).

        Gateways count with their kind and an exclusive gateway with its default:
        both decide where a token goes.
        """
        shape = {
            "initial_step": self.initial_step,
            "steps": {name: _step_shape(step) for name, step in sorted(self.steps.items())},
            "edges": [edge.describe() for edge in self.edges],
        }
        encoded = json.dumps(shape, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


#: The kinds of boundary edge (``Edge.on``).
BOUNDARY_KINDS = ("error", "timeout")


def _check_boundary(where: str, edge: Edge, source: BaseStep) -> None:
    """A boundary edge leaves a step that can fail (error) or waits (timeout): the step
    classes say which (``BaseStep.can_fail``, ``BaseStep.waits``)."""
    if edge.on is None:
        if edge.after is not None:
            raise DefinitionError(f"{where}: edge {edge} has after= but is no timeout edge")
        return
    if edge.on not in BOUNDARY_KINDS:
        raise DefinitionError(
            f"{where}: edge {edge}: on must be one of {', '.join(BOUNDARY_KINDS)}, not {edge.on!r}"
        )
    if edge.condition is not None:
        raise DefinitionError(f"{where}: {edge.on} edge {edge} cannot have a condition")
    name = type(source).__name__
    if edge.on == "error":
        if edge.after is not None:
            raise DefinitionError(f"{where}: error edge {edge} takes no after=")
        if not source.can_fail:
            raise DefinitionError(
                f"{where}: error edge {edge} leaves {name} {edge.source!r}, which cannot fail "
                "(error edges leave machine and sub-workflow steps)"
            )
        return
    if not isinstance(edge.after, timedelta) or edge.after <= timedelta(0):
        raise DefinitionError(
            f"{where}: timeout edge {edge} needs after= a positive timedelta, got {edge.after!r}"
        )
    if not source.waits:
        raise DefinitionError(
            f"{where}: timeout edge {edge} leaves {name} {edge.source!r}, which does not wait "
            "(timeout edges leave human, timer and other waiting steps)"
        )
    if isinstance(source, WaitForSignal) and source.timeout is not None:
        # Both would fire (the step's timeout fails it, the edge routes on): say which.
        raise DefinitionError(
            f"{where}: timeout edge {edge} leaves {edge.source!r}, a WaitForSignal with its "
            "own timeout=: give one of them (the edge to go on, timeout= to fail)"
        )


def _check_human_step(where: str, step_name: str, step: BaseHumanStep) -> None:
    try:  # again: a subclass may set them as class attributes
        step.check_deadlines()
    except ValueError as exc:
        raise DefinitionError(f"{where}: human step {step_name!r}: {exc}") from None
    unknown = sorted(set(step.action_forms) - set(step.actions))
    if unknown:
        raise DefinitionError(
            f"{where}: human step {step_name!r} has action_forms for {', '.join(unknown)}, "
            f"which are not among its actions ({', '.join(step.actions) or 'none'})"
        )
    required = step.comment_required
    unknown = [] if isinstance(required, bool) else sorted(set(required) - set(step.actions))
    if unknown or isinstance(required, str):
        raise DefinitionError(
            f"{where}: human step {step_name!r}: comment_required must be True or a list of "
            f"its actions ({', '.join(step.actions) or 'none'}); got {required!r}"
        )
    kinds = {name: kind for name, kind in step.action_kinds.items() if kind not in ACTION_KINDS}
    if set(step.action_kinds) - set(step.actions) or kinds:
        raise DefinitionError(
            f"{where}: human step {step_name!r}: action_kinds maps actions "
            f"({', '.join(step.actions) or 'none'}) to one of {', '.join(ACTION_KINDS)}; "
            f"got {dict(step.action_kinds)!r}"
        )
    if step.assignees is not None and (
        step.candidate_groups or type(step).get_assignee is not BaseHumanStep.get_assignee
    ):
        raise DefinitionError(
            f"{where}: human step {step_name!r} declares assignees and candidate_groups or "
            "get_assignee(); with assignees, each one gets a task: list the groups there"
        )
    if step.fields is not None and (step.form_class is not None or step.form_schema is not None):
        raise DefinitionError(
            f"{where}: human step {step_name!r} declares fields and a form; its form's "
            "fields are the ones it takes: drop fields"
        )
