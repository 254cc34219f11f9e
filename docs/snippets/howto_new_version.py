from django_workflows import BaseHumanStep, BaseMachineStep, Edge, WorkflowDefinition, registry
from django_workflows.models import WorkflowInstance, WorkflowStatus


class Pay(BaseMachineStep):
    def execute(self, context):
        context.set("paid", True)


class Notify(BaseMachineStep):  # new in 2.0.0
    def execute(self, context):
        context.set("notified", True)


# 1.0.0 exactly as released. Keep it registered while instances of it are open.
registry.register_definition(
    WorkflowDefinition(
        name="payment",
        version="1.0.0",
        initial_step="approval",
        steps={"approval": BaseHumanStep(title="Approve the payment"), "pay": Pay()},
        edges=[Edge("approval", "pay")],
    )
)

# 2.0.0 adds a step. A changed graph needs a new version; new instances start on it.
registry.register_definition(
    WorkflowDefinition(
        name="payment",
        version="2.0.0",
        initial_step="approval",
        steps={
            "approval": BaseHumanStep(title="Approve the payment"),
            "pay": Pay(),
            "notify": Notify(),
        },
        edges=[Edge("approval", "pay"), Edge("pay", "notify")],
    )
)


def open_instances(name, version):
    """Instances of a version that may still move (retire the version when there are none)."""
    return WorkflowInstance.objects.filter(
        definition__name=name,
        definition__version=version,
        status__in=[
            WorkflowStatus.RUNNING,
            WorkflowStatus.WAITING,
            WorkflowStatus.FAILED,  # retry() would run it on
        ],
    )
