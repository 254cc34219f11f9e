from django_workflows import BaseMachineStep, Edge, ExclusiveGateway, WorkflowDefinition, registry


class Ship(BaseMachineStep):
    def execute(self, context):
        context.set("shipped_by", context.step_name)


shipping = WorkflowDefinition(
    name="shipping",
    version="1.0.0",
    initial_step="route",
    steps={
        "route": ExclusiveGateway(default="standard"),
        "express": Ship(),
        "freight": Ship(),
        "standard": Ship(),
    },
    edges=[
        Edge("route", "express", condition="context.get('weight', 0) < 1"),
        Edge("route", "freight", condition="context.get('weight', 0) > 30"),
        Edge("route", "standard"),
    ],
)
registry.register_definition(shipping)
