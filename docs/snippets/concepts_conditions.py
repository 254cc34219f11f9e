from django_workflows import BaseMachineStep, Edge, WorkflowDefinition, registry


class Record(BaseMachineStep):
    def execute(self, context):
        context.set(context.step_name, True)


registry.register_definition(
    WorkflowDefinition(
        name="review",
        version="1.0.0",
        initial_step="review",
        steps={name: Record() for name in ("review", "approve", "escalate", "vip", "file")},
        edges=[
            Edge("review", "approve", condition="context.get('score') >= 80"),
            Edge(
                "review",
                "escalate",
                condition="context.get('amount', 0) > 1000 and context.get('country') in ['DE', 'FR']",
            ),
            Edge(
                "review",
                "vip",
                condition=lambda context: context.get("customer", {}).get("tier") == "gold",
            ),
            Edge("review", "file"),  # no condition: always taken
        ],
    )
)
