"""Moving active instances from one definition version to another.

``plan(...)`` reads and decides, per instance, whether it can move (it writes nothing)
and records what it saw (``seen``: a fingerprint of its state and active runs).
``migrate(...)`` then moves each movable instance in one transition
(``transition.run``): the instance row and its active runs are locked, the fingerprint
is taken again, and an instance that changed since the plan is skipped with the reason.
A run claimed by a worker is never moved under its feet: its instance is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError

from .. import events as ev
from .. import versions
from ..context import WorkflowContext
from ..definition import WorkflowDefinition
from ..exceptions import DefinitionError, InstanceNotFound, WorkflowNotFound
from ..models import (
    ACTIVE_RUN_STATUSES,
    DefinitionVersion,
    HumanTask,
    StepRun,
    StepRunStatus,
    TaskStatus,
    WorkflowInstance,
    WorkflowStatus,
)
from ..steps import BaseHumanStep
from . import transition
from .protocol import Engine
from .subflows import definition_row
from .transition import Transition

#: The instance statuses a migration considers (finished instances stay as they ended).
MIGRATABLE_STATUSES = (WorkflowStatus.WAITING, WorkflowStatus.FAILED, WorkflowStatus.RUNNING)


@dataclass(frozen=True)
class InstanceVerdict:
    """One instance in a plan: whether it can move, why not, and what the plan saw."""

    instance_id: uuid.UUID
    movable: bool
    reason: str = ""
    positions: tuple[str, ...] = ()
    seen: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    @property
    def verdict(self) -> str:
        where = ", ".join(self.positions) or "-"
        return f"movable (at {where})" if self.movable else f"blocked: {self.reason}"

    def __str__(self) -> str:
        return f"{self.instance_id}: {self.verdict}"


@dataclass(frozen=True)
class MigrationPlan:
    """What ``migrate_instances`` would do; prints one line per instance."""

    workflow: str
    from_version: str
    to_version: str
    step_map: Mapping[str, str]
    instances: tuple[InstanceVerdict, ...]

    @property
    def movable(self) -> tuple[InstanceVerdict, ...]:
        return tuple(i for i in self.instances if i.movable)

    @property
    def blocked(self) -> tuple[InstanceVerdict, ...]:
        return tuple(i for i in self.instances if not i.movable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "step_map": dict(self.step_map),
            "instances": [
                {
                    "instance_id": str(i.instance_id),
                    "movable": i.movable,
                    "reason": i.reason,
                    "positions": list(i.positions),
                }
                for i in self.instances
            ],
        }

    def __str__(self) -> str:
        head = (
            f"migration plan {self.workflow} {self.from_version} -> {self.to_version}: "
            f"{len(self.movable)} movable, {len(self.blocked)} blocked"
        )
        return "\n".join([head, *(f"  {i}" for i in self.instances)])

    def __repr__(self) -> str:
        return f"<MigrationPlan {self}>"


@dataclass(frozen=True)
class MigrationResult:
    """What happened to one instance: ``migrated``, else ``reason`` says why not."""

    instance_id: uuid.UUID
    migrated: bool
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.instance_id}: {'migrated' if self.migrated else 'skipped: ' + self.reason}"


class _Skip(Exception):
    """Raised inside the migration's transition: roll it back, report the reason."""


# -- planning -----------------------------------------------------------------------


def _old_steps(engine: Engine, name: str, version: str) -> dict[str, str]:
    """Step name -> type of ``version``: the registered definition, else the stored graph."""
    if engine.registry.has_definition(name, version):
        return {
            n: str(s.step_type)
            for n, s in engine.registry.get_definition(name, version).steps.items()
        }
    row = DefinitionVersion.objects.filter(name=name, version=version).first()
    if row is None:
        raise ValidationError({"from_version": [f"workflow {name!r} has no version {version!r}"]})
    return {n: str(s.get("type", "")) for n, s in row.graph.get("steps", {}).items()}


def _checked_arguments(
    engine: Engine,
    name: str,
    from_version: str,
    to_version: str,
    step_map: Mapping[str, str] | None,
) -> tuple[WorkflowDefinition, dict[str, str]]:
    if name not in engine.registry:
        # Name the field that is wrong: no version of an unknown workflow can be right.
        raise ValidationError({"workflow": [f"no workflow named {name!r} is registered"]})
    if from_version == to_version:
        raise ValidationError({"to_version": ["is the version the instances already run"]})
    try:
        new = engine.registry.get_definition(name, to_version)
    except WorkflowNotFound as exc:
        raise ValidationError({"to_version": [str(exc)]}) from None
    stored = DefinitionVersion.objects.filter(name=name, version=to_version).first()
    if (
        stored is not None
        and stored.checksum != new.checksum
        and (not versions.graph_changes_allowed() or stored.instances.exists())
    ):
        raise ValidationError(
            {
                "to_version": [
                    f"the registered graph of {new} differs from the stored one; "
                    f"{versions.why_refused(stored)}"
                ]
            }
        )
    old = _old_steps(engine, name, from_version)
    try:
        mapping = dict(step_map or {})
    except (TypeError, ValueError):
        raise ValidationError({"step_map": ["a mapping of old step names to new ones"]}) from None
    errors = []
    for source, target in mapping.items():
        if not isinstance(source, str) or not isinstance(target, str):
            errors.append("step names are strings")
        elif source not in old:
            errors.append(f"{name} {from_version} has no step {source!r}")
        elif target not in new.steps:
            errors.append(f"{new} has no step {target!r}")
    if errors:
        raise ValidationError({"step_map": errors})
    return new, mapping


def _positions(instance: WorkflowInstance) -> tuple[str, ...]:
    """Where the instance stands: its active steps, or the step it failed at."""
    names = list(instance.current_steps)
    if instance.status == WorkflowStatus.FAILED and instance.failed_step:
        names.append(instance.failed_step)
    return tuple(dict.fromkeys(names))


def _fingerprint(instance: WorkflowInstance, runs: list[StepRun]) -> tuple[Any, ...]:
    """What must not change between the plan and the move."""
    return (
        instance.definition_id,
        instance.status,
        instance.updated_at.isoformat() if instance.updated_at else "",
        tuple(instance.current_steps),
        repr(sorted((k, sorted(v.items())) for k, v in instance.tokens.items())),
        instance.failed_step,
        tuple(sorted((r.pk, r.step_name, r.status) for r in runs)),
    )


def _verdict(
    instance: WorkflowInstance,
    runs: list[StepRun],
    old: dict[str, str],
    new: WorkflowDefinition,
    mapping: Mapping[str, str],
) -> str:
    """Why the instance cannot move, or "" if it can."""
    for run in runs:
        if run.status == StepRunStatus.RUNNING:
            return f"running step {run.step_name!r} is claimed by a worker"
    names = [*instance.current_steps, *(r.step_name for r in runs)]
    if instance.status == WorkflowStatus.FAILED and instance.failed_step:
        names.append(instance.failed_step)
    for step_name in dict.fromkeys(names):
        target = mapping.get(step_name, step_name)
        if target not in new.steps:
            return f"step {step_name!r} removed in {new.version} and not mapped"
        was, now = old.get(step_name), str(new.steps[target].step_type)
        if was and was != now:
            return (
                f"step {step_name!r} is a {was} step but {target!r} is a {now} step "
                f"in {new.version}"
            )
    return _tokens(instance.tokens, new, mapping)[1]


def _tokens(
    tokens: dict[str, dict[str, bool]], new: WorkflowDefinition, mapping: Mapping[str, str]
) -> tuple[dict[str, dict[str, bool]], str]:
    """The join tokens renamed for ``new``, and why not ("" if they move).

    A dead token (a branch not taken) from a source that no longer leads to the join
    is dropped; a live one would be lost, so it blocks."""
    moved: dict[str, dict[str, bool]] = {}
    for join, sources in tokens.items():
        target = mapping.get(join, join)
        expected = set(new.forward_sources.get(target, ())) if target in new.steps else set()
        kept = {}
        for source, live in sources.items():
            source_to = mapping.get(source, source)
            if len(expected) > 1 and source_to in expected:
                kept[source_to] = live
            elif live:
                return {}, (
                    f"join {join!r} holds a live token from {source!r}, which does not lead "
                    f"to a join {target!r} in {new.version}"
                )
        if kept:
            moved[target] = kept
    return moved, ""


def _active_runs(instance_ids: Iterable[Any], *, lock: bool = False) -> list[StepRun]:
    query = StepRun.objects.filter(instance_id__in=instance_ids, status__in=ACTIVE_RUN_STATUSES)
    if lock:
        # A worker's claim (a conditional update of the run) waits for us. We never
        # wait for a run a worker is writing (its finish may want the instance row we
        # hold: a deadlock): such a run is left out, and the caller skips the instance.
        query = query.select_for_update(skip_locked=True)
    return list(query.order_by("pk"))


def plan(
    engine: Engine,
    name: str,
    from_version: str,
    to_version: str,
    *,
    step_map: Mapping[str, str] | None = None,
    instance_ids: Iterable[Any] | None = None,
) -> MigrationPlan:
    new, mapping = _checked_arguments(engine, name, from_version, to_version, step_map)
    old = _old_steps(engine, name, from_version)
    query = WorkflowInstance.objects.filter(
        definition__name=name, definition__version=from_version, status__in=MIGRATABLE_STATUSES
    ).select_related("definition")
    wanted: list[uuid.UUID] | None = None
    if instance_ids is not None:
        if isinstance(instance_ids, str | bytes) or not isinstance(instance_ids, Iterable):
            raise ValidationError({"instance_ids": ["not a list of instance ids"]})
        wanted = []
        for raw in instance_ids:
            try:
                wanted.append(uuid.UUID(str(raw)))
            except ValueError:
                # Name the culprit: among many ids (--instance, a pasted list) it is hard to spot.
                raise ValidationError(
                    {"instance_ids": [f"not a list of instance ids: {raw!r} is no instance id"]}
                ) from None
        wanted = list(dict.fromkeys(wanted))
        query = query.filter(pk__in=wanted)
    found = {i.pk: i for i in query.order_by("started_at", "pk")}
    runs: dict[uuid.UUID, list[StepRun]] = {pk: [] for pk in found}
    for run in _active_runs(found):
        runs[run.instance_id].append(run)
    verdicts = []
    for pk, instance in found.items():
        reason = _verdict(instance, runs[pk], old, new, mapping)
        verdicts.append(
            InstanceVerdict(
                instance_id=pk,
                movable=not reason,
                reason=reason,
                positions=_positions(instance),
                seen=_fingerprint(instance, runs[pk]),
            )
        )
    for pk in wanted or ():
        if pk not in found:
            verdicts.append(
                InstanceVerdict(pk, False, f"not an active instance of {name} {from_version}")
            )
    return MigrationPlan(name, from_version, to_version, mapping, tuple(verdicts))


# -- moving -------------------------------------------------------------------------


def _move(
    tx: Transition, plan_: MigrationPlan, seen: InstanceVerdict, new: WorkflowDefinition
) -> None:
    instance = tx.instance
    if instance.definition.name != plan_.workflow or instance.definition.version != (
        plan_.from_version
    ):
        raise _Skip(f"it runs {instance.definition.name} {instance.definition.version} now")
    runs = _active_runs([instance.pk], lock=True)
    if len(runs) != len(_active_runs([instance.pk])):
        raise _Skip("a worker is writing one of its steps right now; plan again")
    if _fingerprint(instance, runs) != seen.seen:
        reason = _verdict(instance, runs, {}, new, plan_.step_map)
        raise _Skip("it changed since the plan" + (f" ({reason})" if reason else ""))
    mapping = plan_.step_map

    def to(step_name: str) -> str:
        return mapping.get(step_name, step_name)

    moved = {s: to(s) for s in instance.current_steps}
    instance.current_steps = [to(s) for s in instance.current_steps]
    instance.tokens = _tokens(instance.tokens, new, mapping)[0]
    if instance.failed_step:
        instance.failed_step = to(instance.failed_step)
    for run in runs:
        if to(run.step_name) != run.step_name:
            StepRun.objects.filter(pk=run.pk).update(step_name=to(run.step_name))
    # Open tasks follow their step; title and summary are those of the new version's
    # step (the inbox shows what the task now is); assignees, claims, groups are kept.
    for task in HumanTask.objects.filter(instance=instance, status=TaskStatus.OPEN):
        target = to(task.step_name)
        step = new.steps[target]
        task.step_name = target
        if isinstance(step, BaseHumanStep):
            ctx = WorkflowContext(instance.context, instance_id=instance.pk, step_name=target)
            task.title = step.get_title(ctx)[:300]
            task.summary = step.get_summary(ctx)[:300]
        task.save(update_fields=["step_name", "title", "summary"])
    row = definition_row(new)
    WorkflowInstance.objects.filter(pk=instance.pk).update(definition=row)
    instance.definition = row
    tx.definition = new  # the status is settled by the new graph (close())
    tx.event(
        ev.InstanceMigrated,
        from_version=plan_.from_version,
        to_version=plan_.to_version,
        step_map=dict(mapping),
        moved=moved,
    )


def migrate(engine: Engine, plan_: MigrationPlan) -> list[MigrationResult]:
    try:
        new = engine.registry.get_definition(plan_.workflow, plan_.to_version)
    except WorkflowNotFound as exc:
        raise ValidationError({"to_version": [str(exc)]}) from None
    results = []
    for seen in plan_.instances:
        if not seen.movable:
            results.append(MigrationResult(seen.instance_id, False, seen.reason))
            continue
        try:
            transition.run(
                engine,
                seen.instance_id,
                partial(_move, plan_=plan_, seen=seen, new=new),
                needs_definition=False,  # the old graph may be the very thing being fixed
            )
        except _Skip as skip:
            results.append(MigrationResult(seen.instance_id, False, str(skip)))
        except InstanceNotFound:
            results.append(MigrationResult(seen.instance_id, False, "the instance was deleted"))
        except DefinitionError as exc:
            results.append(MigrationResult(seen.instance_id, False, str(exc)))
        else:
            results.append(MigrationResult(seen.instance_id, True))
    return results


__all__ = [
    "InstanceVerdict",
    "MigrationPlan",
    "MigrationResult",
    "migrate",
    "plan",
]
