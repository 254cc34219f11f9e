"""Who may see, cancel, retry and complete what: written once, used by the engine, the
admin, the API and the commands.

Instances
    A user sees the instances they started or hold a task in (as its assignee, as a
    member of one of its candidate groups, as the one who claimed or completed it).
    ``django_workflows.view_workflowinstance`` shows every instance, and so does the
    change permission (as in Django's admin: who may change may view).
    Cancel and retry need ``django_workflows.change_workflowinstance``; the user who
    started an instance may also cancel and retry it. Migrating instances to another
    version of their workflow needs the change permission (having started one is not
    enough: a migration is an operator's act on many instances).
Tasks
    A user sees the tasks of the instances they see. ``view_humantask`` (and a
    permission that shows every instance, and ``complete_any_task``) shows every task.
    Completing and claiming follow the task rule: a task claimed by someone is
    theirs; else its assignee if it has one; else the members of its candidate groups,
    matched by name whenever the group is created. A task with neither assignee nor
    groups, or whose groups do not exist, is open to nobody else. A user with
    ``django_workflows.complete_any_task`` may complete any task.
Signals
    Sending an external signal to an instance (``POST /api/workflows/signals/``) needs
    ``django_workflows.send_signal`` (any instance: give it to the account of the
    system that sends them) or what cancel and retry need (the change permission, or
    having started the instance). A user sees the signals of the instances they see.
Substitutes
    While a ``Substitution`` is active (``starts_at`` <= now < ``ends_at``, by the
    application's clock, both users active), its substitute may see, claim and complete
    every task the task rule gives the absent user (assigned to them, claimed by them,
    open to their groups) and sees the instances those tasks are in. A substitute
    inherits tasks, not powers: the absent user's permissions (``complete_any_task``,
    the view permissions) are not lent, and substitutions do not chain.
    Completing through a substitution is recorded: ``completed_on_behalf_of``.
    A user sees and manages the substitutions they are absent in (and sees those they
    stand in for); ``django_workflows.change_substitution`` manages everyone's.

Staff status grants nothing here (the admin needs it to be entered at all: that is
Django's). Superusers hold every permission (Django's ``has_perm``); inactive and
anonymous users hold none.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from .models import HumanTask, HumanTaskGroup, Substitution, TaskStatus, WorkflowInstance

VIEW_INSTANCES = "django_workflows.view_workflowinstance"
CHANGE_INSTANCES = "django_workflows.change_workflowinstance"
VIEW_TASKS = "django_workflows.view_humantask"
COMPLETE_ANY_TASK = "django_workflows.complete_any_task"
REASSIGN_ANY_TASK = "django_workflows.reassign_any_task"
CHANGE_SUBSTITUTIONS = "django_workflows.change_substitution"
SEND_SIGNALS = "django_workflows.send_signal"


def is_active_user(user: Any) -> bool:
    """Logged in and active: the only users any rule lets in."""
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


# -- instances ---------------------------------------------------------------------


def sees_every_instance(user: Any) -> bool:
    return is_active_user(user) and (
        user.has_perm(VIEW_INSTANCES) or user.has_perm(CHANGE_INSTANCES)
    )


def visible_instances(
    user: Any, queryset: QuerySet[WorkflowInstance] | None = None
) -> QuerySet[WorkflowInstance]:
    """The instances ``user`` may see.

    With the view permission the queryset unfiltered; else two queries (the user's group
    names and the users they stand in for, then the rows). "Holds a task" is a scalar
    subquery (``[:1]``), probed only for the rows a page walks; ``EXISTS`` under the
    ``OR`` would make PostgreSQL read every task each time.
    """
    instances = WorkflowInstance.objects.all() if queryset is None else queryset
    if not is_active_user(user):
        return instances.none()
    if sees_every_instance(user):
        return instances
    tasks = HumanTask.objects.filter(instance=OuterRef("pk"))
    holders = task_holders(user)
    holds = _is_one_of("assignee", holders) | _is_one_of("claimed_by", holders)
    holds |= Q(completed_by=user)
    names = _all_names(holders)
    if names:
        tasks = tasks.alias(dwf_member=first_candidate_group(names))
        holds |= Q(dwf_member__isnull=False)
    held = Subquery(tasks.filter(holds).order_by().values("pk")[:1])  # any one: unsorted
    return instances.alias(dwf_held=held).filter(Q(started_by=user) | Q(dwf_held__isnull=False))


def can_view_instance(user: Any, instance: WorkflowInstance) -> bool:
    """Whether ``user`` may see ``instance``: the rule of ``visible_instances``."""
    if not is_active_user(user):
        return False
    if sees_every_instance(user) or _started(user, instance):
        return True
    return visible_instances(user, WorkflowInstance.objects.filter(pk=instance.pk)).exists()


def can_manage_instance(user: Any, instance: WorkflowInstance | None = None) -> bool:
    """Whether ``user`` may cancel and retry ``instance`` (any instance, if None).

    The change permission, or having started the instance: the starter may take back
    what they started.
    """
    if not is_active_user(user):
        return False
    return user.has_perm(CHANGE_INSTANCES) or (instance is not None and _started(user, instance))


def can_migrate_instances(user: Any) -> bool:
    """Whether ``user`` may move instances to another definition version (the admin
    action, the API, by plan): the change permission only."""
    return is_active_user(user) and user.has_perm(CHANGE_INSTANCES)


def sends_every_signal(user: Any) -> bool:
    """``send_signal``: may send a signal to any instance (and find any to send it to)."""
    return is_active_user(user) and user.has_perm(SEND_SIGNALS)


def can_send_signal(user: Any, instance: WorkflowInstance) -> bool:
    """Whether ``user`` may send ``instance`` an external signal: ``send_signal``, or
    who may cancel and retry it (``can_manage_instance``)."""
    return sends_every_signal(user) or can_manage_instance(user, instance)


def signal_targets(user: Any) -> QuerySet[WorkflowInstance]:
    """The instances ``user`` may look up to send a signal to (others answer 404)."""
    if sends_every_signal(user):
        return WorkflowInstance.objects.all()
    return visible_instances(user)


def _started(user: Any, instance: WorkflowInstance) -> bool:
    return instance.started_by_id is not None and instance.started_by_id == user.pk


# -- tasks -------------------------------------------------------------------------


def sees_every_task(user: Any) -> bool:
    return sees_every_instance(user) or (
        is_active_user(user) and (user.has_perm(VIEW_TASKS) or user.has_perm(COMPLETE_ANY_TASK))
    )


def visible_tasks(user: Any, queryset: QuerySet[HumanTask] | None = None) -> QuerySet[HumanTask]:
    """The tasks ``user`` may see: every task of an instance they may see."""
    tasks = HumanTask.objects.all() if queryset is None else queryset
    if not is_active_user(user):
        return tasks.none()
    if sees_every_task(user):
        return tasks
    return tasks.filter(instance__in=visible_instances(user).values("pk"))


def can_view_task(user: Any, task: HumanTask) -> bool:
    """Whether ``user`` may see ``task``: the rule of ``visible_tasks``."""
    if not is_active_user(user):
        return False
    return sees_every_task(user) or can_view_instance(user, task.instance)


def can_complete_task(task: HumanTask, user: Any, *, ignore_claim: bool = False) -> bool:
    """Whether ``user`` may complete (or claim) ``task``: the task rule, themselves or
    as a substitute.

    ``ignore_claim``: whether the user could, were the task not claimed by someone.
    """
    return _completion(task, user, ignore_claim)[0]


def on_behalf_of(task: HumanTask, user: Any) -> Any:
    """The pk of the absent user for whom ``user`` completes ``task``: when the task is
    not ``user``'s own by the task rule but an active substitution gives it to them
    (their own claim aside: a substitute who claimed the task still does it for the
    absent user). A substitute holding ``complete_any_task`` still completes the absent
    user's task on their behalf. None otherwise."""
    return completion(task, user)[1]


def completion(task: HumanTask, user: Any) -> tuple[bool, Any]:
    """(``can_complete_task``, ``on_behalf_of``) in one look-up, for a completion that
    needs both."""
    mine = task.claimed_by_id is not None and task.claimed_by_id == getattr(user, "pk", None)
    allowed, absent = _completion(task, user, mine, powers=False)
    if allowed:
        return True, absent
    # What the look-up without powers left out: the user's own claim, complete_any_task.
    return (mine and is_active_user(user)) or _completion(task, user, mine)[0], None


def _completion(
    task: HumanTask, user: Any, ignore_claim: bool, *, powers: bool = True
) -> tuple[bool, Any]:
    """(may ``user`` complete ``task``, the absent user's pk if only as a substitute);
    ``powers=False`` leaves ``complete_any_task`` out, to tell whose task it is."""
    if not is_active_user(user):
        return False, None
    if powers and user.has_perm(COMPLETE_ANY_TASK):
        return True, None
    owner = None
    if task.claimed_by_id is not None and not ignore_claim:
        owner = task.claimed_by_id
    elif task.assignee_id is not None:
        owner = task.assignee_id
    if owner is not None:
        if owner == user.pk:
            return True, None
        return (True, owner) if owner in absent_users(user) else (False, None)
    # Names, so a group created after the task counts and a missing one lets nobody in.
    names = {group.name for group in task.candidate_groups.all()}
    if not names:
        return False, None
    for pk, groups in task_holders(user).items():  # the user first
        if names & groups:
            return True, (None if pk == user.pk else pk)
    return False, None


def can_reassign_task(task: HumanTask, user: Any) -> bool:
    """Whether ``user`` may hand ``task`` to someone else: its assignee, the user who
    claimed it, or a holder of ``reassign_any_task`` (superusers)."""
    if not is_active_user(user):
        return False
    if user.has_perm(REASSIGN_ANY_TASK):
        return True
    return user.pk is not None and user.pk in (task.assignee_id, task.claimed_by_id)


def completable_tasks(
    user: Any, queryset: QuerySet[HumanTask] | None = None
) -> QuerySet[HumanTask]:
    """The open tasks ``user`` may complete (the inbox): the SQL form of ``can_complete_task``.

    Two queries: the user's group names and the users they stand in for (one query,
    ``task_holders``), then the tasks (plus, once per user object, Django's permission
    cache). The group test is a scalar subquery (``[:1]``) on the unique (task, name)
    index, not ``EXISTS`` under an ``OR``, which PostgreSQL would hash by reading every
    candidate group on each call; a scalar subquery is probed only for the rows a page
    walks, so a page of 50 stays fast at any number of tasks.
    """
    tasks = HumanTask.objects.all() if queryset is None else queryset
    tasks = tasks.filter(status=TaskStatus.OPEN)
    if not is_active_user(user):
        return tasks.none()
    if user.has_perm(COMPLETE_ANY_TASK):
        return tasks
    holders = task_holders(user)
    mine = _is_one_of("claimed_by", holders) | (
        Q(claimed_by__isnull=True) & _is_one_of("assignee", holders)
    )
    names = _all_names(holders)
    if names:
        tasks = tasks.alias(dwf_member=first_candidate_group(names))
        mine |= Q(claimed_by__isnull=True, assignee__isnull=True, dwf_member__isnull=False)
    return tasks.filter(mine)


# -- substitutions -----------------------------------------------------------------


def manages_every_substitution(user: Any) -> bool:
    return is_active_user(user) and user.has_perm(CHANGE_SUBSTITUTIONS)


def visible_substitutions(
    user: Any, queryset: QuerySet[Substitution] | None = None
) -> QuerySet[Substitution]:
    """The substitutions ``user`` sees: those they are absent in or stand in for; every
    one with ``change_substitution``."""
    rows = Substitution.objects.all() if queryset is None else queryset
    if not is_active_user(user):
        return rows.none()
    if manages_every_substitution(user):
        return rows
    return rows.filter(Q(user=user.pk) | Q(substitute=user.pk))


def can_manage_substitution(user: Any, substitution: Substitution | None = None) -> bool:
    """Whether ``user`` may add (None: their own), change and end ``substitution``: the
    absent user themselves, or a holder of ``change_substitution``."""
    if not is_active_user(user):
        return False
    if manages_every_substitution(user):
        return True
    return substitution is None or substitution.user_id == user.pk


def active_substitutions() -> QuerySet[Substitution]:
    """The substitutions in force now: both users active, ``starts_at`` <= now < ``ends_at``."""
    now = timezone.now()
    return Substitution.objects.filter(
        active_users_q("user"), active_users_q("substitute"), starts_at__lte=now, ends_at__gt=now
    )


def active_users_q(prefix: str = "") -> Q:
    """Users (through ``prefix``) whose ``is_active`` is set; a custom user model without
    the field has only active users (``AbstractBaseUser.is_active`` is a constant)."""
    try:
        get_user_model()._meta.get_field("is_active")
    except FieldDoesNotExist:
        return Q()
    return Q(**{f"{prefix}__is_active" if prefix else "is_active": True})


def absent_users(user: Any) -> list[Any]:
    """The pks of the users ``user`` stands in for now (one query)."""
    rows = active_substitutions().filter(substitute=user.pk)
    return list(rows.values_list("user_id", flat=True).distinct())


def task_holders(user: Any) -> dict[Any, set[str]]:
    """Whose tasks ``user`` may take, each with their group names: ``user`` first, then
    the users they stand in for now. One query (a user without substitutions gets only
    their own row: the query that reads their group names anyway)."""
    absent = active_substitutions().filter(substitute=user.pk).values("user_id")
    rows = (
        get_user_model()
        ._default_manager.filter(Q(pk=user.pk) | Q(pk__in=absent))
        .values_list("pk", "groups__name")
    )
    holders: dict[Any, set[str]] = {user.pk: set()}
    for pk, name in rows:
        names = holders.setdefault(pk, set())
        if name is not None:
            names.add(name)
    return holders


def _is_one_of(field: str, holders: dict[Any, set[str]]) -> Q:
    pks = list(holders)
    return Q(**{field: pks[0]}) if len(pks) == 1 else Q(**{f"{field}__in": pks})


def _all_names(holders: dict[Any, set[str]]) -> list[str]:
    return sorted(set().union(*holders.values()))


def user_group_names(user: Any) -> list[str]:
    """The names of ``user``'s groups, read once so the task filters need no join."""
    return list(user.groups.values_list("name", flat=True))


def first_candidate_group(names: list[str]) -> Subquery:
    """A candidate group of the outer task with one of ``names``, or NULL."""
    rows = HumanTaskGroup.objects.filter(task_id=OuterRef("pk"), name__in=names)
    # Unordered: the model's ordering (by task, i.e. its creation) would join the task
    # table into every probe and sort, where the (task, name) index answers alone.
    return Subquery(rows.order_by().values("pk")[:1])
