from datetime import UTC, datetime, timedelta

from django_workflows import BaseMachineStep, Edge, TimerStep, WorkflowDefinition, registry

cool_off = TimerStep(timedelta(hours=1))  # due one hour after it is reached


class UntilFirstDay(TimerStep):  # or a due time computed from the context
    def get_due_at(self, context):
        return datetime.fromisoformat(context.get("first_day")).replace(tzinfo=UTC)


class StartLeave(BaseMachineStep):
    def execute(self, context):
        context.set("on_leave", True)


registry.register_definition(
    WorkflowDefinition(
        name="leave",
        version="1.0.0",
        initial_step="wait",
        steps={"wait": UntilFirstDay(), "start": StartLeave()},
        edges=[Edge("wait", "start")],
    )
)
