"""What a completer may submit: validation that knows the button pressed, and a step
without a form that may add keys but not overwrite the workflow's.

On SQLite and PostgreSQL.
"""

import pytest
from django import forms
from django.core.exceptions import ValidationError

from django_workflows import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    WorkflowDefinition,
    WorkflowRegistry,
)
from django_workflows.exceptions import DefinitionError
from django_workflows.forms import form_for_step, schema_for_step
from django_workflows.models import TaskStatus

APPROVE_OR_REJECT = {"Approve": {"approved": True}, "Reject": {"approved": False}}


class ApprovalForm(forms.Form):
    cost_center = forms.CharField()
    comments = forms.CharField(required=False)


class RejectForm(forms.Form):
    comments = forms.CharField()


class Pay(BaseMachineStep):
    def execute(self, context):
        context.set("paid", context.get("amount"))


def approval(**step_options):
    return WorkflowDefinition(
        name="po",
        version="1",
        initial_step="approval",
        steps={
            "approval": BaseHumanStep(title="Approve", actions=APPROVE_OR_REJECT, **step_options),
            "pay": Pay(),
            "rejected": Pay(),
        },
        edges=[
            Edge("approval", "pay", condition="context.get('approved') == True"),
            Edge("approval", "rejected", condition="context.get('approved') != True"),
        ],
    )


@pytest.fixture
def start(engine):
    def start(definition, **data):
        engine.registry.register_definition(definition)
        instance = engine.start_workflow(definition.name, initial_data=data)
        return instance, instance.human_tasks.get()

    return start


# -- validation knows the action ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "reject_form",
    [
        RejectForm,
        {
            "type": "object",
            "properties": {"comments": {"type": "string"}},
            "required": ["comments"],
        },
    ],
    ids=["form-class", "json-schema"],
)
def test_a_rejection_needs_only_what_the_reject_form_asks(engine, start, manager, reject_form):
    instance, task = start(approval(form_class=ApprovalForm, action_forms={"Reject": reject_form}))
    instance = engine.complete_task(task.pk, manager, {"comments": "over budget"}, action="Reject")
    assert instance.status == "completed"
    assert instance.context == {"comments": "over budget", "approved": False, "paid": None}


@pytest.mark.django_db
def test_the_action_form_still_validates_and_the_approval_keeps_its_own(engine, start, manager):
    instance, task = start(approval(form_class=ApprovalForm, action_forms={"Reject": RejectForm}))
    with pytest.raises(ValidationError) as refused:
        engine.complete_task(task.pk, manager, {}, action="Reject")
    assert refused.value.message_dict == {"comments": ["This field is required."]}
    with pytest.raises(ValidationError) as refused:
        engine.complete_task(task.pk, manager, {"comments": "fine"}, action="Approve")
    assert refused.value.message_dict == {"cost_center": ["This field is required."]}
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    instance = engine.complete_task(task.pk, manager, {"cost_center": "CC-7"}, action="Approve")
    assert instance.context["approved"] is True and instance.context["cost_center"] == "CC-7"


@pytest.mark.django_db
def test_clean_is_told_the_action(engine, start, manager):
    seen = []

    class Approval(BaseHumanStep):
        form_class = ApprovalForm

        def clean(self, data, action=None):
            seen.append(action)
            if action == "Reject":
                if not data.get("comments"):
                    raise ValidationError({"comments": ["Say why."]})
                return {"comments": data["comments"]}
            return super().clean(data, action)

    definition = approval()
    definition.steps["approval"] = Approval(title="Approve", actions=APPROVE_OR_REJECT)
    instance, task = start(definition)
    with pytest.raises(ValidationError, match="Say why"):
        engine.complete_task(task.pk, manager, {}, action="Reject")
    instance = engine.complete_task(task.pk, manager, {"comments": "no"}, action="Reject")
    assert seen == ["Reject", "Reject"]
    assert instance.context["approved"] is False


def test_the_forms_and_schemas_of_each_action():
    step = approval(form_class=ApprovalForm, action_forms={"Reject": RejectForm}).steps["approval"]
    assert form_for_step(step) is ApprovalForm
    assert form_for_step(step, "Approve") is ApprovalForm
    assert form_for_step(step, "Reject") is RejectForm
    assert schema_for_step(step, "Reject")["required"] == ["comments"]
    assert schema_for_step(step)["required"] == ["cost_center"]


def test_action_forms_must_name_actions_and_fields_need_no_form():
    with pytest.raises(DefinitionError, match="action_forms for Refuse, which are not among"):
        WorkflowRegistry().register_definition(approval(action_forms={"Refuse": RejectForm}))
    with pytest.raises(DefinitionError, match="declares fields and a form"):
        WorkflowRegistry().register_definition(
            approval(form_class=ApprovalForm, fields=["comments"])
        )


# -- a step without a form protects the context -----------------------------------------


@pytest.mark.django_db
def test_a_formless_step_may_not_overwrite_the_workflows_keys(engine, start, manager):
    """An approver sent ``amount`` with the approval: the payment must not pay it."""
    instance, task = start(approval(), amount=1000)
    with pytest.raises(ValidationError) as refused:
        engine.complete_task(
            task.pk, manager, {"approved": True, "amount": 1000000}, action="Approve"
        )
    assert list(refused.value.message_dict) == ["amount"]
    assert "already in the workflow's context" in refused.value.message_dict["amount"][0]
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    assert engine.get_instance(instance.id).context == {"amount": 1000}

    instance = engine.complete_task(task.pk, manager, {"comments": "ok"}, action="Approve")
    assert instance.context == {"amount": 1000, "comments": "ok", "approved": True, "paid": 1000}


@pytest.mark.django_db
def test_the_reference_engines_formless_completion_still_adds_keys(engine, start, manager):
    definition = approval()
    instance, _task = start(definition, amount=500)
    instance = engine.complete_human_task(
        instance.id, "approval", user_id=manager.pk, data={"approved": True, "comments": "Fine"}
    )
    assert instance.context == {"amount": 500, "approved": True, "comments": "Fine", "paid": 500}


@pytest.mark.django_db
def test_declared_fields_may_change_and_nothing_else_is_taken(engine, start, manager):
    instance, task = start(approval(fields=["comments", "amount"]), amount=5, comments="first")
    with pytest.raises(ValidationError) as refused:
        engine.complete_task(task.pk, manager, {"iban": "XX"}, action="Approve")
    assert list(refused.value.message_dict) == ["iban"]
    instance = engine.complete_task(
        task.pk, manager, {"amount": 4, "comments": "cut"}, action="Approve"
    )
    assert instance.context == {"amount": 4, "comments": "cut", "approved": True, "paid": 4}


@pytest.mark.django_db
def test_a_formless_step_in_a_rework_loop_may_change_what_it_set_before(engine, manager):
    class Rework(BaseMachineStep):
        def execute(self, context):
            context.set("round", context.get("round", 0) + 1)

    engine.registry.register_definition(
        WorkflowDefinition(
            name="loop",
            version="1",
            initial_step="review",
            steps={"review": BaseHumanStep(title="Review"), "rework": Rework(), "done": Rework()},
            edges=[
                Edge("review", "rework", condition="context.get('ok') != True"),
                Edge("rework", "review"),
                Edge("review", "done", condition="context.get('ok') == True"),
            ],
        )
    )
    instance = engine.start_workflow("loop")
    instance = engine.complete_human_task(
        instance.id, "review", manager, {"ok": False, "note": "a"}
    )
    assert instance.context == {"ok": False, "note": "a", "round": 1}
    # "round" is the workflow's (the rework step set it), not this step's: refused.
    with pytest.raises(ValidationError) as refused:
        engine.complete_human_task(instance.id, "review", manager, {"ok": True, "round": 9})
    assert list(refused.value.message_dict) == ["round"]
    # The second round sets the same keys as the first: this step's own.
    instance = engine.complete_human_task(instance.id, "review", manager, {"ok": True, "note": "b"})
    assert instance.status == "completed"
    assert instance.context == {"ok": True, "note": "b", "round": 2}


@pytest.mark.django_db
def test_a_key_the_form_does_not_take_is_refused_not_dropped(engine, start, manager):
    """A typo (``coments``) used to vanish: the approver believed they had commented."""
    instance, task = start(approval(form_class=ApprovalForm))
    with pytest.raises(ValidationError) as refused:
        engine.complete_task(
            task.pk, manager, {"cost_center": "CC", "coments": "typo"}, action="Approve"
        )
    assert refused.value.message_dict == {
        "coments": ["not a field of this task's form (its fields: cost_center, comments)"]
    }
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    # The action's own key may be sent along (it is the action's value that counts).
    instance = engine.complete_task(
        task.pk, manager, {"cost_center": "CC", "approved": False}, action="Approve"
    )
    assert instance.context["approved"] is True
