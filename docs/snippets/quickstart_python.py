from django_workflows import get_engine
from django_workflows.permissions import completable_tasks

engine = get_engine()
instance = engine.start_workflow(
    "expense_claim",
    initial_data={"amount": 120, "employee": "Ada"},  # JSON-serializable
    business_key="EXP-2024-001",  # your own reference, optional
    started_by=employee,  # a user, a user pk, or None
)
assert instance.status == "waiting"
assert instance.current_step == "approval"

# The manager's inbox: the open tasks they may complete.
task = completable_tasks(manager).get(instance=instance)
instance = engine.complete_task(
    task.pk,
    user_id=manager,
    action="Approve",  # the button: sets approved = True
    data={"comments": "Receipts checked"},  # validated by the step's form
    check_permission=True,  # refuse a user the task rule does not allow
)
assert instance.status == "completed"
assert instance.context["paid"] == 120
