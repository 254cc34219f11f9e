"""Human tasks: who may complete them, claiming, action buttons, forms; idempotent starts."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied, ValidationError

from django_workflows import (
    BaseHumanStep,
    Edge,
    StateConflict,
    TaskNotOpen,
    WorkflowDefinition,
    WorkflowStatus,
)
from django_workflows.forms import form_for_step, schema_for_step
from django_workflows.models import HumanTask, HumanTaskGroup, IdempotencyKey, WorkflowInstance
from django_workflows.permissions import can_complete_task, completable_tasks

from .. import workflows
from ..factories import GroupFactory, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db


class Assigned(BaseHumanStep):
    title = "Sign the contract"

    def get_assignee(self, context):
        return context.get("signer")


class Buttons(BaseHumanStep):
    title = "Decide"
    actions = {"Approve": {"approved": True}, "Reject": {"approved": False}}
    form_schema = {
        "type": "object",
        "properties": {
            "comment": {"type": "string", "maxLength": 500},
            "priority": {"type": "integer", "minimum": 1, "maximum": 3},
            "channel": {"type": "string", "enum": ["mail", "phone"]},
        },
        "required": ["priority"],
    }


class Open(BaseHumanStep):
    title = "No assignee, no group"


class Auditors(BaseHumanStep):
    title = "For a group nobody created yet"
    candidate_groups = ("auditors",)


def grant_override(user):
    user.user_permissions.add(Permission.objects.get(codename="complete_any_task"))
    return type(user).objects.get(pk=user.pk)  # no stale permission cache


@pytest.fixture
def tasks_registry(wf_registry):
    for name, step in (
        ("assigned", Assigned()),
        ("buttons", Buttons()),
        ("open", Open()),
        ("audit", Auditors()),
    ):
        wf_registry.register_definition(
            WorkflowDefinition(
                name=name,
                version="1",
                initial_step="task",
                steps={"task": step, "done": workflows.Record()},
                edges=[Edge("task", "done")],
            )
        )
    return wf_registry


def open_task(instance):
    return HumanTask.objects.get(instance=instance, status="open")


def test_who_may_complete_a_task(engine, tasks_registry, manager):
    signer, other, staff = UserFactory(), UserFactory(), StaffFactory()
    superuser = UserFactory(is_superuser=True)
    overrider = grant_override(UserFactory())
    group_task = open_task(engine.start_workflow("expense", initial_data={"amount": 1}))
    assigned_task = open_task(engine.start_workflow("assigned", initial_data={"signer": signer.pk}))
    unrestricted = open_task(engine.start_workflow("open"))

    assert can_complete_task(group_task, manager)
    assert not can_complete_task(group_task, other)
    assert not can_complete_task(group_task, staff)  # staff outside the group
    assert can_complete_task(assigned_task, signer)
    assert not can_complete_task(assigned_task, manager)
    assert not can_complete_task(unrestricted, staff)  # no assignee, no group: fail closed
    assert not can_complete_task(unrestricted, other)
    for task in (group_task, assigned_task, unrestricted):
        assert can_complete_task(task, superuser)
        assert can_complete_task(task, overrider)
        assert not can_complete_task(task, None)

    assert set(completable_tasks(manager)) == {group_task}
    assert set(completable_tasks(signer)) == {assigned_task}
    assert set(completable_tasks(staff)) == set()
    assert set(completable_tasks(other)) == set()
    everything = {group_task, assigned_task, unrestricted}
    assert set(completable_tasks(superuser)) == set(completable_tasks(overrider)) == everything


def test_completing_with_check_permission_refuses_others_and_changes_nothing(engine, manager):
    instance = engine.start_workflow("expense", initial_data={"amount": 1})
    task = open_task(instance)
    outsider = UserFactory()

    with pytest.raises(PermissionDenied, match="may not complete"):
        engine.complete_task(task.pk, outsider, {"approved": True}, check_permission=True)
    assert open_task(instance) == task
    instance = engine.complete_task(task.pk, manager, {"approved": False}, check_permission=True)
    assert instance.status == WorkflowStatus.COMPLETED


def test_a_checked_completion_looks_up_the_users_groups_once(engine, manager):
    """The task rule and "on behalf of whom" come from one look-up of the completer's
    groups (and of the users they stand in for), not one each."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    task = open_task(engine.start_workflow("expense", initial_data={"amount": 1}))
    manager = type(manager).objects.get(pk=manager.pk)  # no cached permissions
    with CaptureQueriesContext(connection) as queries:
        engine.complete_task(task.pk, manager, {"approved": True}, check_permission=True)
    looked_up = [q["sql"] for q in queries.captured_queries if "auth_user_groups" in q["sql"]]
    assert len(looked_up) == 1, looked_up


def test_claim_and_unclaim(engine, manager):
    colleague = UserFactory(groups=[GroupFactory(name="managers")])
    instance = engine.start_workflow("expense", initial_data={"amount": 1})
    task = open_task(instance)

    engine.claim_task(task.pk, manager)
    task.refresh_from_db()
    assert task.claimed_by == manager
    assert not can_complete_task(task, colleague)  # claimed: it is the claimer's now
    assert set(completable_tasks(colleague)) == set()
    with pytest.raises(StateConflict, match="claimed by"):
        engine.claim_task(task.pk, colleague)
    with pytest.raises(PermissionDenied):
        engine.unclaim_task(task.pk, colleague)

    engine.unclaim_task(task.pk, manager)
    task.refresh_from_db()
    assert task.claimed_by is None
    with pytest.raises(StateConflict, match="not claimed"):
        engine.unclaim_task(task.pk, manager)
    with pytest.raises(PermissionDenied):
        engine.claim_task(task.pk, UserFactory())  # not a candidate
    with pytest.raises(PermissionDenied):
        engine.claim_task(task.pk, None)

    # A user who may complete any task may also take a claim back from its claimer.
    from django.contrib.auth.models import Permission

    engine.claim_task(task.pk, manager)
    overseer = UserFactory()
    overseer.user_permissions.add(Permission.objects.get(codename="complete_any_task"))
    engine.unclaim_task(task.pk, overseer)
    task.refresh_from_db()
    assert task.claimed_by is None

    engine.complete_task(task.pk, manager, {"approved": False})
    with pytest.raises(TaskNotOpen):
        engine.claim_task(task.pk, manager)


def test_action_buttons_merge_their_values(engine, tasks_registry, staff):
    instance = engine.start_workflow("buttons")
    task = open_task(instance)

    with pytest.raises(ValidationError) as excinfo:
        engine.complete_task(task.pk, staff, {"priority": 2}, action="Maybe")
    assert "unknown action 'Maybe'" in str(excinfo.value)
    with pytest.raises(ValidationError) as excinfo:
        engine.complete_task(task.pk, staff, {"priority": 9}, action="Approve")
    assert "priority" in excinfo.value.message_dict
    with pytest.raises(ValidationError):
        engine.complete_task(task.pk, staff, ["not", "an", "object"])
    assert open_task(instance) == task

    instance = engine.complete_task(
        task.pk, staff, {"priority": "2", "channel": "mail"}, action="Reject"
    )
    assert instance.context == {
        "approved": False,
        "priority": 2,
        "channel": "mail",
        "comment": "",
        "done_done": True,
    }


def test_forms_and_schemas_of_steps():
    schema_form = form_for_step(Buttons())
    assert set(schema_form.base_fields) == {"comment", "priority", "channel"}
    assert schema_form.base_fields["priority"].required
    assert not schema_form.base_fields["comment"].required
    assert schema_for_step(Buttons()) is Buttons.form_schema

    derived = schema_for_step(workflows.ManagerApproval())
    assert derived["properties"]["approved"]["type"] == "boolean"
    assert derived["properties"]["amount_approved"] == {
        "title": "Amount approved",
        "type": "integer",
        "minimum": 0,
    }
    assert derived["required"] == []
    assert form_for_step(Open()) is None
    assert schema_for_step(Open()) == {"type": "object", "properties": {}}


def test_idempotent_start(engine, user):
    first, created = engine.get_or_start_workflow(
        "expense", initial_data={"amount": 1}, started_by=user, idempotency_key="req-1"
    )
    again, created_again = engine.get_or_start_workflow(
        "expense", initial_data={"amount": 999}, started_by=user, idempotency_key="req-1"
    )
    other_user, created_other = engine.get_or_start_workflow(
        "expense", initial_data={"amount": 1}, started_by=UserFactory(), idempotency_key="req-1"
    )

    assert (created, created_again, created_other) == (True, False, True)
    assert again.pk == first.pk
    assert again.context["amount"] == 1
    assert other_user.pk != first.pk
    assert WorkflowInstance.objects.count() == 2
    with pytest.raises(StateConflict, match="was used to start 'expense'"):
        engine.get_or_start_workflow("notifications", started_by=user, idempotency_key="req-1")
    with pytest.raises(ValidationError):
        engine.get_or_start_workflow("expense", started_by=user, idempotency_key="")
    assert IdempotencyKey.objects.count() == 2


def test_the_inbox_query_agrees_with_the_rule_for_every_user_and_task(engine, tasks_registry):
    # completable_tasks() is the SQL form of can_complete_task(): check them against
    # each other over every kind of task and user, claimed or not.
    managers, auditors = GroupFactory(name="managers"), GroupFactory(name="auditors")
    users = [
        UserFactory(),
        UserFactory(groups=[managers]),
        UserFactory(groups=[managers, auditors]),
        StaffFactory(),
        StaffFactory(groups=[auditors]),
        UserFactory(is_superuser=True),
        UserFactory(groups=[managers], is_active=False),
        grant_override(StaffFactory()),
        UserFactory(groups=[GroupFactory(name="ghosts")]),
    ]
    for amount in (1, 2):
        engine.start_workflow("expense", initial_data={"amount": amount})
    for signer in users[:3]:
        engine.start_workflow("assigned", initial_data={"signer": signer.pk})
    engine.start_workflow("open")
    engine.start_workflow("open")
    tasks = list(HumanTask.objects.filter(status="open"))
    HumanTaskGroup.objects.create(task=tasks[0], name="auditors")  # two candidate groups
    HumanTaskGroup.objects.create(task=tasks[-2], name="nobody-has-this-group")
    HumanTask.objects.filter(pk=tasks[1].pk).update(claimed_by=users[2])
    HumanTask.objects.filter(pk=tasks[-1].pk).update(claimed_by=users[3])
    tasks = list(HumanTask.objects.filter(status="open"))

    for user in users:
        expected = {task.pk for task in tasks if can_complete_task(task, user)}
        assert set(completable_tasks(user).values_list("pk", flat=True)) == expected, user
    assert len({frozenset(completable_tasks(u).values_list("pk", flat=True)) for u in users}) > 4


# -- candidate groups are names: an unknown group fails closed -------------------------


def test_a_task_for_a_group_that_does_not_exist_is_open_to_nobody(engine, tasks_registry, caplog):
    staff, superuser = StaffFactory(), UserFactory(is_superuser=True)
    overrider = grant_override(StaffFactory())

    task = open_task(engine.start_workflow("audit"))

    assert list(task.candidate_groups.values_list("name", flat=True)) == ["auditors"]
    assert "no group named ['auditors']" in caplog.text
    for user in (staff, UserFactory(), UserFactory(groups=[GroupFactory(name="managers")])):
        assert not can_complete_task(task, user)
        assert set(completable_tasks(user)) == set()
        with pytest.raises(PermissionDenied):
            engine.complete_task(task.pk, user, {}, check_permission=True)
        with pytest.raises(PermissionDenied):
            engine.claim_task(task.pk, user)
    assert can_complete_task(task, superuser) and can_complete_task(task, overrider)
    assert set(completable_tasks(overrider)) == {task}


def test_a_group_created_later_lets_its_members_complete_the_task(engine, tasks_registry):
    task = open_task(engine.start_workflow("audit"))
    auditor = UserFactory()
    assert not can_complete_task(task, auditor)

    auditor.groups.add(Group.objects.create(name="auditors"))

    assert can_complete_task(task, auditor)
    assert set(completable_tasks(auditor)) == {task}
    assert not can_complete_task(task, StaffFactory())
    instance = engine.complete_task(task.pk, auditor, {}, check_permission=True)
    assert instance.status == WorkflowStatus.COMPLETED


def test_a_renamed_group_takes_its_tasks_away(engine, manager):
    # Names are what the task keeps: the group "managers" renamed is not "managers".
    task = open_task(engine.start_workflow("expense", initial_data={"amount": 1}))
    assert can_complete_task(task, manager)

    Group.objects.filter(name="managers").update(name="management")

    assert not can_complete_task(task, manager)
    assert set(completable_tasks(manager)) == set()


def test_an_assigned_task_with_an_unknown_group_is_the_assignees(engine, tasks_registry):
    signer = UserFactory()

    class AssignedToAuditors(Assigned):
        candidate_groups = ("auditors",)

    tasks_registry.register_definition(
        WorkflowDefinition(
            name="assigned_audit",
            version="1",
            initial_step="task",
            steps={"task": AssignedToAuditors(), "done": workflows.Record()},
            edges=[Edge("task", "done")],
        )
    )
    task = open_task(engine.start_workflow("assigned_audit", initial_data={"signer": signer.pk}))

    assert can_complete_task(task, signer)
    assert not can_complete_task(task, StaffFactory())
    assert set(completable_tasks(signer)) == {task}


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_linked_groups_and_recovers_missing_ones():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("django_workflows", "0003_task_list_indexes")]
    executor = MigrationExecutor(connection)
    target = executor.loader.graph.leaf_nodes("django_workflows")
    executor.migrate(before)
    try:
        old = MigrationExecutor(connection).loader.project_state(before).apps
        Group = old.get_model("auth", "Group")
        definition = old.get_model("django_workflows", "DefinitionVersion").objects.create(
            name="w",
            version="1",
            checksum="x",
            graph={"steps": {"approve": {"candidate_groups": ["managers", "auditors"]}}},
        )
        instance = old.get_model("django_workflows", "WorkflowInstance").objects.create(
            definition=definition, status="waiting"
        )
        run = old.get_model("django_workflows", "StepRun").objects.create(
            instance=instance, step_name="approve", step_type="human", status="waiting"
        )
        task = old.get_model("django_workflows", "HumanTask").objects.create(
            instance=instance, step_run=run, step_name="approve", title="t"
        )
        # "auditors" did not exist when the task was created: only "managers" is linked.
        task.candidate_groups.add(Group.objects.create(name="managers"))
        Group.objects.create(name="extra")
        task.candidate_groups.add(Group.objects.get(name="extra"))  # linked, not declared
    finally:
        MigrationExecutor(connection).migrate(target)

    names = HumanTaskGroup.objects.filter(task_id=task.pk).values_list("name", flat=True)
    assert sorted(names) == ["auditors", "extra", "managers"]
